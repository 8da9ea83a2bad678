"""Errors a user can fix, reported as one line each on stderr, without a traceback."""

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from scaletrain.config.build import unwrap_instantiation
from scaletrain.errors import ConfigError
from scaletrain.runtime.quiet import FILE_ONLY

log = logging.getLogger("scaletrain")


def print_problems(problems: list[str]) -> None:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr, flush=True)


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
        print_problems(problems)
        if logged():
            for problem in problems:
                log.error("error: %s", problem, extra=FILE_ONLY)
        sys.exit(2)
