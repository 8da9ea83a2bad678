"""Build what a run's config describes: Lightning objects from config groups (whose entries
may be switched off with null), and the Trainer with its strategy."""

from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig

from scaletrain.callbacks.checkpoints import checkpoint_order
from scaletrain.callbacks.training_length import TrainingLength
from scaletrain.checkpoint.atomic import AtomicCheckpointIO
from scaletrain.errors import ConfigError
from scaletrain.models.base import ScaleModule
from scaletrain.parallel.layout import SHARDED, ParallelLayout, world_size
from scaletrain.parallel.strategies import build_strategy
from scaletrain.reporting.hparams import HparamsColumns


def unwrap_instantiation(error: BaseException) -> BaseException:
    """The error raised inside a ``_target_``, which Hydra wraps in InstantiationException."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def lightning_objection(error: BaseException) -> ConfigError | None:
    """Lightning's refusal of a Trainer argument (raised when the Trainer is built) as a
    one-line error; None for any other error."""
    error = unwrap_instantiation(error)
    # ImportError: an accelerator whose package is not installed (tpu)
    if not isinstance(error, MisconfigurationException | ValueError | TypeError | ImportError):
        return None
    # one line, however many Lightning wrote ("You requested gpu: [0]\n But your machine...")
    message = " ".join(str(error).split()) or type(error).__name__
    return ConfigError(f"trainer: {message if len(message) <= 300 else message[:297] + '...'}")


def build_model(cfg: DictConfig) -> ScaleModule:
    """The run's LightningModule. Under the sharded strategies its net is built on the meta
    device, taking no memory, and each rank allocates only its own shards in
    ``configure_model``; elsewhere it is built whole."""
    return instantiate(cfg.model, empty_init=cfg.strategy.name in SHARDED)


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every non-null entry of a group such as ``callbacks`` or ``logger``."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None]


def plugins() -> list[Any]:
    """Atomic checkpoint writes; under SLURM, its environment without Lightning's own
    requeue on SIGUSR1, which would save from inside the signal handler, one rank alone:
    the job's signal stop saves on every rank at the same step, and submitit's launcher or
    scripts/slurm.sbatch requeues (see scaletrain.runtime.signals)."""
    found = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        found.append(SLURMEnvironment(auto_requeue=False))
    return found


def build_trainer(cfg: DictConfig, model: ScaleModule) -> L.Trainer:
    """The Lightning Trainer with this run's strategy, callbacks and loggers; hands the
    sharding options of the strategy to ``model``, which applies them in configure_model.
    Lightning's own objections to its arguments become one-line errors."""
    try:
        layout = ParallelLayout.of(cfg.strategy, world_size(cfg.trainer))
    except (MisconfigurationException, TypeError) as error:
        raise lightning_objection(error) from None
    strategy, model.fsdp_options = build_strategy(cfg.strategy, layout)
    # the length check is no option: a run whose settings it corrects would not start
    callbacks = [*checkpoint_order(instantiate_group(cfg.get("callbacks"))), TrainingLength()]
    if HydraConfig.initialized():  # a run's HPARAMS entry names its Hydra choices
        callbacks.append(HparamsColumns(cfg))
    loggers = instantiate_group(cfg.get("logger")) or False
    try:
        return instantiate(
            cfg.trainer,
            strategy=strategy,
            callbacks=callbacks,
            logger=loggers,
            plugins=plugins(),
        )
    except Exception as raised:
        objection = lightning_objection(raised)
        if objection is None:
            raise
        raise objection from None
