"""What TensorBoard shows of a run: a name that says what ran, listed name first, and
cards that lead with the learning curves.

The name is the experiment (or model-data) and the overrides that made the run
different, e.g. ``mlp-digits,lr=3e-3,strategy=ddp``: the event files go to
``<run dir>/tensorboard/<name>/``. A resumed run keeps the name of its first attempt, so
its curves continue in one run. TensorBoard names a run by its path under ``--logdir``,
and run directories are named by date, so each run is also listed in the log
directory's index, ``outputs/tensorboard/<name> @ <date>_<time>``: a link to its event
files (TensorBoard follows links; the files stay with the run). ``tensorboard --logdir
outputs/tensorboard`` then lists every run by what it is, its date after the name.

TensorBoard groups cards by the tag's first part, in alphabetical order, and opens the
first two groups. Lightning logs ``epoch`` and the learning-rate monitor ``lr-Adam``,
which would come first; here the epoch is left out of TensorBoard (it is in the progress
bar, metrics.json and the CSV log) and the learning rate is a training curve,
``train/lr``, after ``train/loss``.
"""

import contextlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch.loggers import TensorBoardLogger

from scaletrain.reporting.record import (
    checkpoint_run_dir,
    recorded_choices,
    recorded_overrides,
)

# Overrides that do not change what a run computes, left out of its name and settings.
NOT_SETTINGS = (
    "ckpt_path",
    "verbose",
    "print_config",
    "logger",
    "logger.",
    "paths.",
    "hydra.",
    "trainer.enable_progress_bar",
    "callbacks.rich_progress_bar",
)
# Groups already in the name's prefix.
NAMED_GROUPS = ("experiment", "model", "data")
MAX_NAME = 120


def parse_override(text: str) -> tuple[str, str]:
    """``("model.optimizer.lr", "3e-3")`` of ``model.optimizer.lr=3e-3``: the key as Hydra's
    parser reads it (``+``, ``~`` and ``@package`` dropped), the value as typed."""
    (override,) = OverridesParser.create().parse_overrides([text])
    _, _, value = text.partition("=")  # a key never holds "=": the rest is the value
    return override.key_or_group, value


def setting_overrides(overrides: list[str]) -> list[tuple[str, str]]:
    """The overrides that change what the run computes, as ``(key, value)``."""
    pairs = [parse_override(text) for text in overrides]
    return [(key, value) for key, value in pairs if not is_bookkeeping(key)]


def is_bookkeeping(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in NOT_SETTINGS)


def first_overrides() -> list[str]:
    """The overrides of the run's first attempt (this one's, where it is the first)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    recorded = recorded_overrides(run_dir, attempt=0)
    return recorded if recorded is not None else list(HydraConfig.get().overrides.task)


def evaluated_run() -> Path | None:
    """For an eval job, the directory of the training run whose checkpoint it tests."""
    if HydraConfig.get().job.name != "eval":
        return None
    for key, value in map(parse_override, HydraConfig.get().overrides.task):
        if key == "ckpt_path":
            return checkpoint_run_dir(Path(value))
    return None


def group_choices() -> dict[str, str | None]:
    """The run's model, data and experiment options (an eval's: its training run's)."""
    evaluated = evaluated_run()
    recorded = recorded_choices(evaluated) if evaluated else {}
    return recorded or dict(HydraConfig.get().runtime.choices)


def run_name() -> str:
    """``gpt_text,lr=3e-3,strategy=ddp``: the experiment (or ``<model>-<data>``), then the
    settings the first attempt's command line changed, by their shortest unique key
    (``run`` for a config composed outside a Hydra job, as tests and benchmarks do)."""
    if not HydraConfig.initialized():
        return "run"
    choices = group_choices()
    experiment = choices.get("experiment")
    prefix = experiment or f"{choices.get('model')}-{choices.get('data')}"
    evaluated = evaluated_run()
    if evaluated is not None:  # named after the run it evaluates, as TensorBoard lists it
        trained = [path.name for path in (evaluated / "tensorboard").glob("*") if path.is_dir()]
        prefix = f"eval-{trained[0] if len(trained) == 1 else prefix}"
    elif HydraConfig.get().job.name == "eval":
        prefix = f"eval-{prefix}"
    pairs = [(k, v) for k, v in setting_overrides(first_overrides()) if k not in NAMED_GROUPS]
    last_parts = [key.rsplit(".", 1)[-1] for key, _ in pairs]
    words = [prefix] + [
        f"{short if last_parts.count(short) == 1 else key}={value}"
        for (key, value), short in zip(pairs, last_parts, strict=True)
    ]
    name = re.sub(r"[/\\\s]+", "_", ",".join(words))  # one directory, no spaces
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 3] + "..."


def event_dir(run_dir: Path) -> Path:
    """Where a run's TensorBoard event files are: ``<run dir>/tensorboard/<run name>/``."""
    (directory,) = [path for path in (Path(run_dir) / "tensorboard").iterdir() if path.is_dir()]
    return directory


def board_name(name: str) -> str:
    """The tag TensorBoard shows for a metric Lightning logs as ``name``: ``lr-Adam`` ->
    ``train/lr``, ``lr-Adam/pg1`` -> ``train/lr/pg1`` (the learning-rate monitor's), others
    unchanged."""
    optimizer, slash, group = name.partition("/")
    if optimizer.startswith("lr-"):
        return f"train/lr{slash}{group}"
    return name


class RunLogger(TensorBoardLogger):
    """Lightning's TensorBoard logger, with the learning rate filed under ``train/`` and the
    epoch left out, so that the train, val and test cards come first."""

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        shown = {board_name(key): value for key, value in metrics.items() if key != "epoch"}
        if shown:
            super().log_metrics(shown, step)


def list_run(trainer: Any, index_dir: Path | None, run_dir: Path) -> None:
    """List the run's TensorBoard event files in the log directory's index."""
    if index_dir is None:
        return
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            list_in_index(index_dir, run_dir, Path(logger.log_dir))


def index_entry(index_dir: Path, run_dir: Path, name: str) -> Path:
    """Where the index lists a run: ``<index>/<name> @ <date>_<time>`` for
    ``outputs/runs/<date>_<time>`` (``... #<job>`` for a sweep's job), the name's settings
    separated by ", " so that TensorBoard's run list wraps a long name instead of cutting
    it."""
    stamp = run_dir.name
    if run_dir.parent.parent.name == "multiruns":
        stamp = f"{run_dir.parent.name} #{run_dir.name}"
    return index_dir / f"{name.replace(',', ', ')} @ {stamp}"


def list_in_index(index_dir: Path, run_dir: Path, events: Path) -> Path:
    """Link the run's event directory ``events`` into the index (a relative link, so the
    whole log directory can move), once; drop links whose run has been removed."""
    entry = index_entry(index_dir, run_dir, events.name)
    drop_removed_runs(index_dir)
    if not entry.is_symlink():
        index_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # a sweep's jobs list at the same time
            entry.symlink_to(os.path.relpath(events, index_dir), target_is_directory=True)
    return entry


def drop_removed_runs(index_dir: Path) -> None:
    """Remove the index's links to runs that are gone."""
    if index_dir.is_dir():
        for entry in index_dir.iterdir():
            if entry.is_symlink() and not entry.exists():
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
