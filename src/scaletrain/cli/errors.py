"""Errors a user can fix, reported as one line each on stderr, without a traceback."""

import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from scaletrain.checkpoint.atomic import SaveFailed
from scaletrain.checkpoint.contents import LAST, checkpoint_step
from scaletrain.config.build import unwrap_instantiation
from scaletrain.errors import ConfigError
from scaletrain.runtime.quiet import FILE_ONLY
from scaletrain.runtime.ranks import is_global_rank_zero, local_rank

log = logging.getLogger("scaletrain")


def print_problems(problems: list[str]) -> None:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr, flush=True)


# torch's CPU allocator: "DefaultCPUAllocator: can't allocate memory: you tried to allocate
# N bytes"; its GPU one raises torch.OutOfMemoryError ("CUDA out of memory. Tried to ...").
CPU_OUT_OF_MEMORY = re.compile(r"can't allocate memory: you tried to allocate (\d+) bytes")


def out_of_memory(error: BaseException) -> str | None:
    """One line for a failed allocation of the training state; None for any other error."""
    text = str(error)
    cpu = CPU_OUT_OF_MEMORY.search(text)
    if cpu is None and type(error).__name__ != "OutOfMemoryError":
        return None
    size = f" allocating {int(cpu.group(1)) / 2**20:.1f} MiB" if cpu else ""
    return (
        f"out of memory on local rank {local_rank()}{size}: shard the model over the devices "
        "(strategy=fsdp or strategy=model_sharded), or make the model or data.batch_size smaller"
    )


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def failed_save(error: SaveFailed, resume_hint: str | None) -> str:
    """One line for a checkpoint that could not be written: what failed, the space it
    needed and had, the checkpoint that remains, and how to go on."""
    last = error.path.parent / LAST
    step = checkpoint_step(last) if last.exists() else None
    kept = (
        f"the last complete checkpoint, {last} (step {step}), is intact"
        if step is not None
        else "no complete checkpoint was saved before it"
    )
    then = f"resume with: {resume_hint}" if resume_hint and step is not None else "run again"
    needed = megabytes(error.needed * error.ranks)
    if error.ranks > 1:  # the parts of the ranks differ by a little: this one's stands for all
        needed = f"about {needed} ({megabytes(error.needed)} from each of {error.ranks} ranks)"
    return (
        f"checkpoint not saved: writing {error.path} failed ({error.reason}); the save needs "
        f"{needed}, {megabytes(error.free)} is free there; nothing of it is left, {kept}; "
        f"free space, then {then}"
    )


def save_failure(error: BaseException) -> SaveFailed | None:
    while error is not None and not isinstance(error, SaveFailed):
        error = error.__cause__ or error.__context__
    return error


@contextmanager
def user_errors(
    *kinds: type[BaseException],
    logged: Callable[[], bool] = lambda: False,
    resume_hint: str | None = None,
) -> Iterator[None]:
    """Turn ``ConfigError`` and the given exception types into one-line errors on stderr
    and exit 2, and running out of memory or a checkpoint that could not be written
    (``resume_hint`` says how to go on) into one line and exit 1; where ``logged()`` (the
    run has a log by then), into its log file too."""
    try:
        yield
    except Exception as raised:
        error = unwrap_instantiation(raised)
        failed = save_failure(error)
        machine = out_of_memory(error) or (failed and failed_save(failed, resume_hint))
        if machine is None and not isinstance(error, (ConfigError, *kinds)):
            raise
        if machine is not None:
            problems = [machine]
        else:
            problems = error.problems if isinstance(error, ConfigError) else [str(error)]
        if not (failed and failed.ranks > 1 and not is_global_rank_zero()):
            print_problems(problems)  # a sharded save's failure: said once, by rank 0
        if logged():
            for problem in problems:
                log.error("error: %s", problem, extra=FILE_ONLY)
        sys.exit(1 if machine is not None else 2)
