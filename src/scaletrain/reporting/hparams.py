"""The HPARAMS tab: one entry per run, with the columns a user compares runs by.

TensorBoard shows (ticks) only five setting columns and five metric columns at first:
the settings marked as differing, by name, and the first metrics of the experiment's
list. Left to itself it marks the settings whose values differ, whatever they are
(``callbacks``, ``data.dir``, ``debug`` before the model), and lists every scalar as a
metric in alphabetical order (``epoch``, ``lr-Adam``, a dozen ``perf/*`` before ``val/*``).
So each run writes, beside its settings and its end status, the experiment's list:

- settings: the model, data, strategy and learning rate, and every plain value the
  command line set (a sweep's parameters), ticked; the experiment, world size, global
  batch and seed listed too. Choices of other config groups (callbacks, debug, logger)
  are in the run's name and its ``.hydra/``, not here; no column holds a whole dict.
- metrics: the monitored metric's best (``val/acc_best``), then ``val/*``, then the
  ``test/*`` counterparts, then ``train/loss``; ``perf/*`` stays in the scalars.

TensorBoard reads the list of one run for the whole log directory: every run writes the
same settings, its own metrics and then those of the shipped classifier and language
model, so whichever list it reads, the columns fit. (A sweep's parameters are columns
of the sweep's runs; where two sweeps of different parameters share a log directory,
one sweep's are in the Trial ID, the run's name, only.)

A run that fails after it has trained is marked as failed (the Status filter hides it);
one that fails before is removed with its directory (see ``scaletrain.cli.runner``).
"""

from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo
from torch.utils.tensorboard.summary import hparams
from torch.utils.tensorboard.writer import FileWriter

from scaletrain.callbacks.checkpoints import best_checkpoint
from scaletrain.models.classifier import Classifier
from scaletrain.models.language_model import LanguageModel
from scaletrain.parallel.layout import world_size
from scaletrain.reporting.tensorboard import group_choices, setting_overrides

# The settings every run lists, by the config key a command line would set.
SETTING_KEYS = {
    "model.optimizer.lr": "lr",
    "data.batch_size": "global_batch",
    "seed": "seed",
}
TICKED = {"model", "data", "strategy", "lr"}
# Listed after a run's own metrics, so that a log directory where classifiers and language
# models meet has columns for both, whichever run's list TensorBoard reads.
SHIPPED_METRICS = sorted({*Classifier.LOGGED_METRICS, *LanguageModel.LOGGED_METRICS})


def run_settings(cfg: DictConfig) -> tuple[dict[str, Any], set[str]]:
    """The settings the HPARAMS tab shows for this run, and the names to tick."""
    choices = group_choices()
    settings: dict[str, Any] = {
        "model": choices.get("model"),
        "data": choices.get("data"),
        "experiment": choices.get("experiment") or "",
        "strategy": cfg.strategy.name,
        "world_size": world_size(cfg.trainer),
        **{name: OmegaConf.select(cfg, key) for key, name in SETTING_KEYS.items()},
    }
    ticked = set(TICKED)
    runtime_groups = set(HydraConfig.get().runtime.choices)
    for key, text in setting_overrides(list(HydraConfig.get().overrides.task)):
        if key in SETTING_KEYS or key in runtime_groups or key.split("@")[0] in runtime_groups:
            continue
        value = OmegaConf.select(cfg, key, default=text)
        if OmegaConf.is_config(value):  # a whole node: its values are in .hydra/
            continue
        settings[key] = value
        ticked.add(key)
    shown = {
        key: value if isinstance(value, bool | int | float | str) else str(value)
        for key, value in settings.items()
        if value is not None
    }
    return shown, ticked & set(shown)


def metric_columns(logged: list[str], monitor: str | None) -> list[str]:
    """The metric columns, in the order the table shows them."""
    best = [f"{monitor}_best"] if monitor and f"{monitor}_best" in logged else []
    val = sorted(
        (name for name in logged if name.startswith("val/") and name not in best),
        key=lambda name: (name != monitor, name.endswith("_best"), name),
    )
    test = [f"test/{name[4:]}" for name in val if not name.endswith("_best")]
    test += sorted(name for name in logged if name.startswith("test/") and name not in test)
    return best + val + test + [name for name in ("train/loss",) if name in logged]


def _summary(tag: str, content: HParamsPluginData) -> Summary:
    content.version = metadata.PLUGIN_DATA_VERSION
    plugin = Summary.Value(tag=tag)
    plugin.metadata.plugin_data.plugin_name = metadata.PLUGIN_NAME
    plugin.metadata.plugin_data.content = content.SerializeToString()
    return Summary(value=[plugin])


def _write(trainer: L.Trainer, summaries: list[Summary]) -> None:
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            writer = FileWriter(logger.log_dir)
            for summary in summaries:
                writer.add_summary(summary)
            writer.close()


def end_session(trainer: L.Trainer, failed: bool = False) -> None:
    """Mark the run's HPARAMS entry as finished, successfully or not."""
    status = api_pb2.Status.STATUS_FAILURE if failed else api_pb2.Status.STATUS_SUCCESS
    content = HParamsPluginData(session_end_info=SessionEndInfo(status=status))
    _write(trainer, [_summary(metadata.SESSION_END_INFO_TAG, content)])


class HparamsColumns(Callback):
    """The run's HPARAMS entry: its settings as it starts (which other loggers, MLflow or
    W&B, take as the run's parameters), then the experiment's columns (see the module's
    doc) once the run's metrics are known: at the first validation, or at the test of a
    run that only tests. Written by global rank 0."""

    def __init__(self, cfg: DictConfig) -> None:
        self.settings, self.ticked = run_settings(cfg)
        self.started = self.written = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.started or not trainer.is_global_zero:
            return
        self.started = True
        _, start, _ = hparams(self.settings, {})
        _write(trainer, [start])
        for logger in trainer.loggers:
            if not isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(self.settings)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.write(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer)

    def write(self, trainer: L.Trainer) -> None:
        if self.written or not trainer.is_global_zero:
            return
        self.written = True
        checkpoint = best_checkpoint(trainer)
        monitor = checkpoint.monitor if checkpoint else None
        metrics = metric_columns(sorted(trainer.callback_metrics), monitor)
        metrics += [name for name in metric_columns(SHIPPED_METRICS, None) if name not in metrics]
        experiment, _, _ = hparams(self.settings, dict.fromkeys(metrics, 0.0))
        content = HParamsPluginData.FromString(experiment.value[0].metadata.plugin_data.content)
        for info in content.experiment.hparam_infos:
            info.differs = info.name in self.ticked
        _write(trainer, [_summary(metadata.EXPERIMENT_TAG, content)])
