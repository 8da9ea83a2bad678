"""``python -m scaletrain.train resume=<run dir> [overrides]``: continue a run in place.

The run's own overrides (those of its latest recorded attempt) are repeated, so the
config is the run's again; overrides given with ``resume=`` are applied on top and
recorded with the new attempt. The run continues from ``checkpoints/last.ckpt`` of its
directory (from the start if it stopped before saving one).
"""

import sys
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override

from scaletrain.reporting.record import recorded_overrides

RESUME = "resume="
# Set by the resume itself, never carried over from the run's record.
OWN_KEYS = ("ckpt_path", "hydra.run.dir", "hydra.mode")
FLAGS = ("-m", "--multirun")
# Hydra's flags that take the next argument as their value.
VALUED_FLAGS = (
    "-c",
    "--cfg",
    "-p",
    "--package",
    "-cp",
    "--config-path",
    "-cn",
    "--config-name",
    "-cd",
    "--config-dir",
)


def parse(text: str) -> Override:
    return OverridesParser.create().parse_overrides([text])[0]


def key(override: Override) -> str:
    return override.key_or_group + (f"@{override.package}" if override.package else "")


def merge(recorded: list[str], given: list[str]) -> list[str]:
    """The run's ``recorded`` overrides with those ``given`` now taking their place; a
    setting the run added (``+key=``) and now given plainly keeps being added."""
    given_by_key = {key(parse(text)): text for text in given}
    merged = []
    for text in recorded:
        override = parse(text)
        if key(override) in OWN_KEYS:
            continue
        replacement = given_by_key.pop(key(override), None)
        if replacement is None:
            merged.append(text)
        elif override.is_add() and not replacement.startswith("+"):
            merged.append(f"++{replacement}")
        else:
            merged.append(replacement)
    return merged + list(given_by_key.values())


def split_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """Hydra's flags (with their values, ``--cfg job``) apart from the overrides."""
    flags, overrides = [], []
    iterator = iter(args)
    for arg in iterator:
        if not arg.startswith("-"):
            overrides.append(arg)
            continue
        flags.append(arg)
        if arg in VALUED_FLAGS:
            flags.append(next(iterator, ""))
    return flags, overrides


def expand_resume(args: list[str]) -> list[str]:
    """The command-line arguments with ``resume=<run dir>`` expanded; unchanged without it.
    Exits with a one-line error where the directory holds no recorded run."""
    resumes = [arg for arg in args if arg.startswith(RESUME)]
    if not resumes:
        return args
    value = resumes[-1][len(RESUME) :].strip("'\"")
    problem = None
    if any(flag in args for flag in FLAGS):
        problem = f"resume={value}: resumes one run; leave out -m"
    elif (recorded := recorded_overrides(Path(value))) is None:
        problem = (
            f"resume={value}: not a run directory (no .hydra/overrides.yaml in it); give the "
            "directory a train run printed, e.g. outputs/runs/<date>_<time>"
        )
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    flags, given = split_flags([arg for arg in args if not arg.startswith(RESUME)])
    overrides = merge(recorded, given)
    # hydra.mode=RUN: one run, even where the run was a job of an hparams_search sweep
    return [*flags, *overrides, f'hydra.run.dir="{value}"', "ckpt_path=last", "hydra.mode=RUN"]
