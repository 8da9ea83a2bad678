"""``hydra/launcher=slurm``: Hydra's submitit launcher for SLURM, with three additions.

- Before submitting, the request (nodes, tasks, CPUs, GPUs, memory, time limit) is
  checked against the partition's nodes: one line per setting the cluster can never
  satisfy, and nothing submitted.
- While the jobs run, their states are reported as they change, and a job pending for a
  reason that never clears (``PartitionConfig``, a per-job limit) is an error: the sweep's
  jobs are cancelled rather than left waiting forever.
- At a time limit or a preemption (SIGUSR2, ``signal_delay_s`` before the limit), every
  rank stops at the same step and saves last.ckpt (scaletrain.runtime.signals); submitit
  then requeues the job with :meth:`SlurmLauncher.checkpoint`, which resumes it from that
  checkpoint in the same job directory, up to ``max_num_timeout`` times.

Hydra finds launchers only in the ``hydra_plugins`` package, and imports this module at
every start: it imports nothing heavy.
"""

import _thread
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher import submitit_launcher

from scaletrain.runtime.quiet import set_verbosity
from scaletrain.slurm import cluster
from scaletrain.slurm.cluster import never_starts
from scaletrain.slurm.request import request_problems

log = logging.getLogger("scaletrain")

RESUME_OVERRIDE = "ckpt_path=last"


def resumed(overrides: Sequence[str]) -> list[str]:
    """A job's overrides for its next attempt: from its own last.ckpt."""
    kept = [text for text in overrides if text.lstrip("+").split("=", 1)[0] != "ckpt_path"]
    return [*kept, RESUME_OVERRIDE]


class QueueWatch:
    """Reports the state of a sweep's jobs as it changes; cancels them all, and interrupts
    the waiting launcher, when one is pending for a reason that never clears."""

    def __init__(self, script_prefix: str, poll_seconds: float) -> None:
        self.script_prefix = script_prefix
        self.poll_seconds = poll_seconds
        self.problems: list[str] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="slurm-queue", daemon=True)

    def __enter__(self) -> "QueueWatch":
        # The interrupt is a simulated SIGINT, which a process started in the background
        # by a non-interactive shell ignores: while the watch runs, SIGINT interrupts.
        self._sigint = signal.getsignal(signal.SIGINT)
        if self._sigint is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        if self._sigint is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def _watch(self) -> None:
        seen: dict[str, tuple[str, str]] = {}
        while not self._done.wait(self.poll_seconds):
            try:
                jobs = cluster.queued_jobs(self.script_prefix) or []
            except (OSError, subprocess.SubprocessError):  # squeue gone or hung: look again
                continue
            for job in jobs:
                if seen.get(job.job_id) != (job.state, job.reason):
                    seen[job.job_id] = (job.state, job.reason)
                    log.info("SLURM job %s: %s", job.job_id, describe(job))
            stuck = [job for job in jobs if job.state == "PENDING" and never_starts(job.reason)]
            if stuck and not self._done.is_set():
                self.give_up(stuck, jobs)
                return

    def give_up(self, stuck: list[cluster.QueuedJob], jobs: list[cluster.QueuedJob]) -> None:
        """Cancel every job of the sweep and interrupt the launcher waiting for them."""
        self.problems = [
            f"SLURM job {job.job_id} can never start: {job.reason} (the request exceeds a "
            f"limit of its partition, account or QOS: scontrol show job {job.array_id})"
            for job in stuck
        ]
        cluster.cancel(sorted({job.array_id for job in jobs}))
        _thread.interrupt_main()


def describe(job: cluster.QueuedJob) -> str:
    waiting = job.state == "PENDING" and job.reason != "None"
    return job.state + (f" ({job.reason})" if waiting else "")


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    # how often the queue is looked at while the jobs run
    poll_seconds = 10.0

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        assert self.config is not None
        set_verbosity(bool(self.config.get("verbose", False)))
        self.check_request()
        submitit_dir = str(Path(str(self.config.hydra.sweep.dir)).resolve() / ".submitit")
        with QueueWatch(submitit_dir, self.poll_seconds) as watch:
            try:
                return super().launch(job_overrides, initial_job_idx)
            except KeyboardInterrupt:
                if not watch.problems:
                    raise
                self.exit_with(watch.problems + ["the sweep's SLURM jobs were cancelled"])

    def check_request(self) -> None:
        """Exit with one line per setting the partition can never satisfy."""
        partitions = cluster.partitions()
        if partitions is None:
            log.info("sinfo is not available: the SLURM request is not checked before submitting")
            return
        problems = request_problems(self.params, partitions)
        if problems:
            self.exit_with(problems + ["nothing was submitted"])

    @staticmethod
    def exit_with(problems: list[str]) -> None:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr, flush=True)
        sys.exit(2)

    def checkpoint(self, sweep_overrides: Sequence[str], *args: Any, **kwargs: Any) -> Any:
        """What submitit resubmits when it requeues the job: the same job, resumed from
        its last.ckpt (or from the start where it saved none)."""
        import submitit  # lazily, as the base class does: plugin discovery stays fast

        return submitit.helpers.DelayedSubmission(self, resumed(sweep_overrides), *args, **kwargs)
