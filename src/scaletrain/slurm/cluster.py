"""What a SLURM cluster says of its partitions (``sinfo``) and of queued jobs (``squeue``)."""

import re
import shutil
import subprocess
from dataclasses import dataclass

# Reasons a pending job gives that no running job's end will clear: the request exceeds a
# partition's or account's per-job limit, or names something that does not exist. (A
# limit "per job" never clears; limits per user or account, and nodes that are down or
# busy, may.)
NEVER_STARTS = (
    "BadConstraints",
    "PartitionConfig",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "InvalidAccount",
    "InvalidQOS",
    "DependencyNeverSatisfied",
)
PER_JOB_LIMIT = re.compile(r"^(QOS|Assoc)Max\w*PerJob")


def never_starts(reason: str) -> bool:
    """Whether a pending job with this reason waits for something that never comes."""
    return reason in NEVER_STARTS or PER_JOB_LIMIT.match(reason) is not None


@dataclass(frozen=True)
class Partition:
    """A partition's limits, as one job sees them: its largest node."""

    name: str
    default: bool
    nodes: int
    cpus: int  # on one node
    memory_mb: int  # on one node
    gpus: int  # on one node
    time_limit_min: int | None  # None: no limit


def minutes(limit: str) -> int | None:
    """A SLURM time limit (``infinite``, ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM:SS]``)
    in whole minutes, rounded up; None where there is none."""
    if limit.lower() in ("infinite", "unlimited", "n/a"):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [int(part) for part in clock.split(":")]
    if days:  # D-HH, D-HH:MM, D-HH:MM:SS
        parts += [0] * (3 - len(parts))
        hours, mins, secs = parts
        hours += 24 * int(days)
    elif len(parts) == 3:
        hours, mins, secs = parts
    elif len(parts) == 2:
        hours, (mins, secs) = 0, parts
    else:
        hours, mins, secs = 0, parts[0], 0
    return hours * 60 + mins + (1 if secs else 0)


def gpu_count(gres: str) -> int:
    """GPUs in a node's generic resources (``gpu:8``, ``gpu:a100:4(S:0-1),mps:100``)."""
    return sum(int(count) for count in re.findall(r"\bgpu(?::[\w.-]+)?:(\d+)", gres))


SINFO_FORMAT = "%P|%D|%c|%m|%G|%l"


def parse_sinfo(text: str) -> list[Partition]:
    """Partitions from ``sinfo -h -o SINFO_FORMAT``: one line per group of alike nodes."""
    found: dict[str, Partition] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, nodes, cpus, memory, gres, limit = line.split("|")
        default = name.endswith("*")
        name = name.rstrip("*")
        group = Partition(
            name,
            default,
            int(nodes),
            int(cpus.rstrip("+")),
            int(memory.rstrip("+")),
            gpu_count(gres),
            minutes(limit),
        )
        seen = found.get(name)
        if seen is not None:  # another group of nodes in the same partition
            group = Partition(
                name,
                default,
                seen.nodes + group.nodes,
                max(seen.cpus, group.cpus),
                max(seen.memory_mb, group.memory_mb),
                max(seen.gpus, group.gpus),
                group.time_limit_min,
            )
        found[name] = group
    return list(found.values())


def available() -> bool:
    """Whether SLURM's commands are on this machine's PATH."""
    return all(shutil.which(command) for command in ("sinfo", "squeue", "scancel"))


def partitions() -> list[Partition] | None:
    """The cluster's partitions, or None where ``sinfo`` is missing or fails."""
    if not available():
        return None
    done = subprocess.run(
        ["sinfo", "-h", "-o", SINFO_FORMAT], capture_output=True, text=True, timeout=60
    )
    return parse_sinfo(done.stdout) if done.returncode == 0 else None


@dataclass(frozen=True)
class QueuedJob:
    job_id: str  # <array job>_<task> for a job of an array (<array job>_[0-3] pending)
    array_id: str  # the array's job id, or the job's own
    state: str  # PENDING, RUNNING, ...
    reason: str  # why it is pending (None when running)
    command: str  # the batch script


SQUEUE_FORMAT = "%i|%A|%T|%r|%o"


def parse_squeue(text: str) -> list[QueuedJob]:
    jobs = []
    for line in text.splitlines():
        if line.strip():
            job_id, array_id, state, reason, command = line.split("|", 4)
            jobs.append(QueuedJob(job_id, array_id, state, reason, command))
    return jobs


def queued_jobs(script_prefix: str) -> list[QueuedJob] | None:
    """This user's queued jobs whose batch script lies under ``script_prefix``; None where
    ``squeue`` fails."""
    done = subprocess.run(
        ["squeue", "-h", "--me", "-o", SQUEUE_FORMAT], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        return None
    return [job for job in parse_squeue(done.stdout) if job.command.startswith(script_prefix)]


def cancel(job_ids: list[str]) -> None:
    subprocess.run(["scancel", *job_ids], capture_output=True, timeout=60)
