"""Errors a user can fix, reported as one line each, without a traceback."""

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hydra.errors import InstantiationException

from scaletrain.utils import signals
from scaletrain.utils.quiet import FILE_ONLY

log = logging.getLogger("scaletrain")


class ConfigError(ValueError):
    """One or more settings are invalid; each message line names a setting and what is valid."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def check_shape(setting: str, value: int, expected: int, dataset: str) -> None:
    """Raise :class:`ConfigError` when a fixed property of a dataset is set differently."""
    if value != expected:
        raise ConfigError(f"{setting}={value}: the {dataset} data has {expected}; use {expected}")


def unwrap_instantiation(error: BaseException) -> BaseException:
    """The error raised inside a ``_target_``, which Hydra wraps in InstantiationException."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


@contextmanager
def user_errors(
    *kinds: type[BaseException], logged: Callable[[], bool] = lambda: False
) -> Iterator[None]:
    """Turn ``ConfigError`` and the given exception types into one-line errors on stderr
    and exit 2; where ``logged()`` (the run has a log by then), into its log file too."""
    try:
        yield
    except Exception as raised:
        error = unwrap_instantiation(raised)
        if not isinstance(error, (ConfigError, *kinds)):
            raise
        problems = error.problems if isinstance(error, ConfigError) else [str(error)]
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr, flush=True)
            if logged():
                log.error("error: %s", problem, extra=FILE_ONLY)
        sys.exit(2)


# How gloo and NCCL report a peer process that is gone.
LOST_PEER_MESSAGES = ("Connection reset by peer", "Connection closed by peer", "remote process")


def lost_rank(error: BaseException) -> bool:
    """Whether ``error`` says that another rank of the job has gone away."""
    return isinstance(error, RuntimeError) and any(m in str(error) for m in LOST_PEER_MESSAGES)


@contextmanager
def lost_rank_exits(resume_hint: str | None) -> Iterator[None]:
    """Turn the error of a collective whose peer is gone into one line and exit 1 (or,
    where this rank was signalled too, into the signal's stop)."""
    try:
        yield
    except RuntimeError as error:
        if not lost_rank(error):
            raise
        log.debug("lost contact with another rank", exc_info=error)
        stop = signals.current()
        if stop is not None and stop.received is not None:
            # the other ranks stopped for the same signal, before this one
            log.info("stopped by a signal while another rank was stopping: nothing saved")
            sys.exit(stop.exit_status)
        (reason, *_) = str(error).strip().splitlines()
        log.error(
            "error: lost contact with another rank of this job (killed, crashed or cut off): %s",
            reason,
        )
        if resume_hint:
            log.info("checkpoints saved so far are intact; resume with: %s", resume_hint)
        sys.exit(1)
