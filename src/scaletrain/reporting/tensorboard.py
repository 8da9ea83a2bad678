"""What TensorBoard shows of a run: a name that says what ran, and the HPARAMS entry.

The name is the experiment (or model-data) and the overrides that made the run
different, e.g. ``mlp-digits,lr=3e-3,strategy=ddp``: the event files go to
``<run dir>/tensorboard/<name>/``, which TensorBoard lists as the run. A resumed run
keeps the name of its first attempt, so its curves continue in one run.

The HPARAMS tab gets a short list of settings per run: the model, data and strategy, the
world size, the global batch, the learning rate, the seed, and every setting the run's
command line changed; the full config stays in the run's ``.hydra/``. Only each run's
session (its settings, then its end status) is written, never an experiment summary: one
experiment summary, taken from whichever run TensorBoard reads first, would define the
columns of every run in the log directory, hiding the metrics and settings of the others
(a classifier's accuracy beside a language model, a sweep's parameters beside another's).
Without one, TensorBoard lists every run's settings and its logged metrics.
"""

import re
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams
from torch.utils.tensorboard.writer import FileWriter

from scaletrain.parallel.layout import world_size
from scaletrain.reporting.record import (
    checkpoint_run_dir,
    recorded_choices,
    recorded_overrides,
)

# Overrides that do not change what a run computes, left out of its name and settings.
NOT_SETTINGS = (
    "ckpt_path",
    "verbose",
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


def run_settings(cfg: DictConfig) -> dict[str, Any]:
    """The settings the HPARAMS tab shows for this run, as TensorBoard-friendly values."""
    choices = group_choices()
    settings: dict[str, Any] = {
        "model": choices.get("model"),
        "data": choices.get("data"),
        "experiment": choices.get("experiment"),
        "strategy": cfg.strategy.name,
        "world_size": world_size(cfg.trainer),
        "global_batch": cfg.data.get("batch_size"),
        "lr": OmegaConf.select(cfg, "model.optimizer.lr"),
        "seed": cfg.get("seed"),
    }
    shown = {"model", "data", "experiment", "strategy", "model.optimizer.lr", "data.batch_size"}
    for key, text in setting_overrides(list(HydraConfig.get().overrides.task)):
        if key in shown or key in settings:
            continue
        value = OmegaConf.select(cfg, key, default=text)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        settings[key] = value
    return {
        key: value if isinstance(value, bool | int | float | str) else str(value)
        for key, value in settings.items()
        if value is not None
    }


def event_dir(run_dir: Path) -> Path:
    """Where a run's TensorBoard event files are: ``<run dir>/tensorboard/<run name>/``."""
    (directory,) = [path for path in (Path(run_dir) / "tensorboard").iterdir() if path.is_dir()]
    return directory


def _write(trainer: L.Trainer, summaries: list) -> None:
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            writer = FileWriter(logger.log_dir)
            for summary in summaries:
                writer.add_summary(summary)
            writer.close()


def start_session(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Enter the run in the HPARAMS tab with its settings (rank 0, as it starts)."""
    _, start, _ = hparams(run_settings(cfg), {})
    _write(trainer, [start])


def end_session(trainer: L.Trainer) -> None:
    """Mark the run's HPARAMS entry as finished successfully."""
    *_, end = hparams({}, {})  # torch's session end says STATUS_SUCCESS
    _write(trainer, [end])
