"""Whether a job's request fits the partition it goes to: checked before submitting, so
that a request the cluster can never satisfy is an error now, not a job pending forever.
Each problem is one line naming the setting and what the partition offers."""

from typing import Any

from scaletrain.slurm.cluster import Partition

SETTING = "hydra.launcher"


def chosen_partition(name: str | None, partitions: list[Partition]) -> Partition | str:
    """The partition the job goes to (the cluster's default where none is named), or the
    problem of the name."""
    names = ", ".join(partition.name for partition in partitions) or "none"
    if name is None:
        default = next((partition for partition in partitions if partition.default), None)
        return (
            default or f"{SETTING}.partition: the cluster has no default partition; one of: {names}"
        )
    for partition in partitions:
        if partition.name == name:
            return partition
    return f"{SETTING}.partition={name}: no such partition; the cluster has: {names}"


def positive_int(params: dict[str, Any], key: str, source: str = "") -> int | str:
    value = params.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return f"{SETTING}.{key}={value}{source}: must be a whole number above 0"


def request_problems(params: dict[str, Any], partitions: list[Partition]) -> list[str]:
    """Every way the launcher's ``params`` exceed the partition they name."""
    partition = chosen_partition(params.get("partition"), partitions)
    if isinstance(partition, str):
        return [partition]
    where = f"partition {partition.name}"
    problems = []
    nodes = positive_int(params, "nodes", " (trainer.num_nodes)")
    tasks = positive_int(params, "tasks_per_node", " (trainer.devices: one task per device)")
    cpus = params.get("cpus_per_task") or 1
    for count in (nodes, tasks):
        if isinstance(count, str):
            problems.append(count)
    if isinstance(nodes, int) and nodes > partition.nodes:
        problems.append(
            f"{SETTING}.nodes={nodes} (trainer.num_nodes): {where} has {partition.nodes} node"
            + ("s" if partition.nodes != 1 else "")
        )
    if isinstance(tasks, int) and tasks * cpus > partition.cpus:
        problems.append(
            f"{SETTING}.cpus_per_task={cpus} x tasks_per_node={tasks} (trainer.devices) = "
            f"{tasks * cpus} CPUs on a node: a node of {where} has {partition.cpus}"
        )
    gpus = params.get("gpus_per_node") or 0
    if gpus > partition.gpus:
        has = f"at most {partition.gpus} GPUs" if partition.gpus else "no GPUs (use trainer=cpu)"
        problems.append(
            f"{SETTING}.gpus_per_node={gpus} (trainer.devices under trainer=gpu): a node of "
            f"{where} has {has}"
        )
    mem_gb = params.get("mem_gb")
    if mem_gb and mem_gb * 1024 > partition.memory_mb:
        problems.append(
            f"{SETTING}.mem_gb={mem_gb}: a node of {where} has {partition.memory_mb // 1024} GB"
        )
    limit, timeout = partition.time_limit_min, params.get("timeout_min")
    if limit is not None and timeout and timeout > limit:
        problems.append(f"{SETTING}.timeout_min={timeout}: {where} allows at most {limit} minutes")
    return problems
