"""Errors a user can fix, reported as one line each on stderr, without a traceback."""

import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from scaletrain.config.build import unwrap_instantiation
from scaletrain.errors import ConfigError
from scaletrain.runtime.quiet import FILE_ONLY
from scaletrain.runtime.ranks import local_rank

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


@contextmanager
def user_errors(
    *kinds: type[BaseException], logged: Callable[[], bool] = lambda: False
) -> Iterator[None]:
    """Turn ``ConfigError`` and the given exception types into one-line errors on stderr
    and exit 2, and running out of memory into one line and exit 1; where ``logged()``
    (the run has a log by then), into its log file too."""
    try:
        yield
    except Exception as raised:
        error = unwrap_instantiation(raised)
        memory = out_of_memory(error)
        if memory is None and not isinstance(error, (ConfigError, *kinds)):
            raise
        if memory is not None:
            problems = [memory]
        else:
            problems = error.problems if isinstance(error, ConfigError) else [str(error)]
        print_problems(problems)
        if logged():
            for problem in problems:
                log.error("error: %s", problem, extra=FILE_ONLY)
        sys.exit(1 if memory is not None else 2)
