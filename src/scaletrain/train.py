"""Train a model: ``python -m scaletrain.train [group=option] [key=value ...]``.

compose config -> validate -> build data, model, strategy, callbacks, loggers, Trainer
-> fit -> test the best checkpoint -> metrics.json -> return the optimized metric.
"""

import logging
import sys
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from scaletrain.callbacks.non_finite import NonFiniteLoss
from scaletrain.callbacks.preemption import EXIT_STATUS, Preempted
from scaletrain.config import CONFIG_DIR
from scaletrain.consolidate import loadable_checkpoint
from scaletrain.data.idx import IDXFormatError
from scaletrain.data.mnist import MNISTFilesMissing
from scaletrain.models.base import ScaleModule
from scaletrain.parallel.strategy import SHARDED, build_strategy, world_size
from scaletrain.utils.atomic import AtomicCheckpointIO
from scaletrain.utils.checkpoints import checkpoint_problems, resolve_last
from scaletrain.utils.errors import ConfigError, user_errors
from scaletrain.utils.instantiate import instantiate_group
from scaletrain.utils.launch import job_overrides, rank_job, wait_for_started_ranks
from scaletrain.utils.overrides import command_line
from scaletrain.utils.run import collect_metrics, log_hparams, write_metrics_json
from scaletrain.utils.validate import validate

log = logging.getLogger("scaletrain")

# Failures a user fixes by changing a setting or a file: reported in one line.
USER_ERRORS = (MNISTFilesMissing, IDXFormatError, NonFiniteLoss)


def build_trainer(cfg: DictConfig, model: ScaleModule) -> L.Trainer:
    """The Lightning Trainer with this run's strategy, callbacks and loggers; hands the
    sharding options of the strategy to ``model``, which applies them in configure_model."""
    strategy, model.fsdp_options = build_strategy(cfg.strategy, world_size(cfg.trainer))
    return instantiate(
        cfg.trainer,
        strategy=strategy,
        callbacks=instantiate_group(cfg.get("callbacks")),
        logger=instantiate_group(cfg.get("logger")) or False,
        plugins=[AtomicCheckpointIO()],
    )


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit and test as ``cfg`` says; return the final metrics."""
    problems = validate(cfg)
    if problems:
        raise ConfigError(problems)
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)

    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    checkpoint_dir = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath")
    ckpt = resolve_last(cfg.ckpt_path, Path(checkpoint_dir or run_dir / "checkpoints"))
    problems = checkpoint_problems(ckpt, model)
    if problems:
        raise ConfigError(problems)
    trainer = build_trainer(cfg, model)
    if trainer.is_global_zero:
        log.info("run directory: %s", run_dir)
    log.info("rank %d: overrides %s", trainer.global_rank, " ".join(job_overrides()))

    ckpt_path = loadable_checkpoint(ckpt, cfg.strategy.name in SHARDED, run_dir)
    fit_metrics = {}
    if cfg.train:
        # weights_only: a checkpoint holds tensors and plain containers, never code to run
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        fit_metrics = dict(trainer.callback_metrics)
    test_metrics = {}
    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("no best checkpoint was saved: testing the current weights")
        (test_metrics,) = trainer.test(
            model,
            datamodule=datamodule,
            ckpt_path=best or (None if cfg.train else ckpt_path),
            weights_only=True,
        )

    metrics = collect_metrics(fit_metrics, test_metrics)
    if trainer.is_global_zero:
        write_metrics_json(run_dir, trainer, metrics)
        log_hparams(trainer, cfg, metrics)
        log.info("run directory: %s", run_dir)
    wait_for_started_ranks(trainer)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns ``cfg.optimized_metric`` for sweepers."""
    try:
        with user_errors(*USER_ERRORS), rank_job("scaletrain.train"):
            metrics = train(cfg)
    except Preempted as preempted:
        if rank_zero_only.rank == 0:
            log.info("resume with: ckpt_path=last hydra.run.dir=%s", cfg.paths.output_dir)
        sys.exit(preempted.code)
    except SIGTERMException:  # Lightning's own handling, where the callback is left out
        sys.exit(EXIT_STATUS)
    return metrics.get(cfg.get("optimized_metric"))


run = command_line("train", main)

if __name__ == "__main__":
    run()
