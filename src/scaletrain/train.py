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
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from omegaconf import DictConfig, OmegaConf

from scaletrain.callbacks.checkpoints import best_checkpoint, checkpoint_order
from scaletrain.callbacks.non_finite import NonFiniteLoss
from scaletrain.config import CONFIG_DIR, is_global_rank_zero
from scaletrain.consolidate import loadable_checkpoint
from scaletrain.data.idx import IDXFormatError
from scaletrain.data.mnist import MNISTFilesMissing
from scaletrain.models.base import ScaleModule
from scaletrain.parallel.strategy import SHARDED, build_strategy, world_size
from scaletrain.utils.atomic import AtomicCheckpointIO
from scaletrain.utils.checkpoints import checkpoint_problems, checkpoint_step, resolve_last
from scaletrain.utils.errors import ConfigError, unwrap_instantiation, user_errors
from scaletrain.utils.instantiate import instantiate_group
from scaletrain.utils.launch import job_overrides, rank_job, wait_for_started_ranks
from scaletrain.utils.overrides import command_line
from scaletrain.utils.quiet import FILE_ONLY
from scaletrain.utils.record import RunRecord, resume_command
from scaletrain.utils.resume import expand_resume
from scaletrain.utils.run import collect_metrics, write_metrics_json
from scaletrain.utils.signals import EXIT_STATUS, Preempted
from scaletrain.utils.tensorboard import end_session, start_session
from scaletrain.utils.validate import validate

log = logging.getLogger("scaletrain")

# Failures a user fixes by changing a setting or a file: reported in one line.
USER_ERRORS = (MNISTFilesMissing, IDXFormatError, NonFiniteLoss)


def build_trainer(cfg: DictConfig, model: ScaleModule) -> L.Trainer:
    """The Lightning Trainer with this run's strategy, callbacks and loggers; hands the
    sharding options of the strategy to ``model``, which applies them in configure_model.
    Lightning's own objections to its arguments become one-line errors."""
    strategy, model.fsdp_options = build_strategy(cfg.strategy, world_size(cfg.trainer))
    callbacks = checkpoint_order(instantiate_group(cfg.get("callbacks")))
    loggers = instantiate_group(cfg.get("logger")) or False
    try:
        return instantiate(
            cfg.trainer,
            strategy=strategy,
            callbacks=callbacks,
            logger=loggers,
            plugins=[AtomicCheckpointIO()],
        )
    except Exception as raised:
        error = unwrap_instantiation(raised)
        if isinstance(error, MisconfigurationException | ValueError):
            (message, *_) = str(error).strip().splitlines()
            raise ConfigError(f"trainer: {message}") from None
        raise


def train(cfg: DictConfig, record: RunRecord) -> dict[str, float]:
    """Fit and test as ``cfg`` says; return the final metrics."""
    problems = validate(cfg)
    if problems:
        raise ConfigError(problems)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = record.run_dir

    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    checkpoint_dir = OmegaConf.select(cfg, "callbacks.last_checkpoint.dirpath")
    ckpt = resolve_last(cfg.ckpt_path, Path(checkpoint_dir or run_dir / "checkpoints"))
    problems = checkpoint_problems(ckpt, model)
    if problems and cfg.ckpt_path == "last" and not record.new:
        problems.append(f"{resume_command(run_dir)} resumes with the run's own settings")
    if problems:
        raise ConfigError(problems)
    trainer = build_trainer(cfg, model)
    # The preflight has passed: from here on, the attempt is part of the run's record.
    record.write(cfg)
    if trainer.is_global_zero:
        start_session(trainer, cfg)
        log.info("run directory: %s", run_dir)
        if ckpt is not None and cfg.train:
            log.info("resuming from %s (step %s)", ckpt, checkpoint_step(Path(ckpt)))
    log.info(
        "rank %d: overrides %s", trainer.global_rank, " ".join(job_overrides()), extra=FILE_ONLY
    )

    ckpt_path = loadable_checkpoint(ckpt, cfg.strategy.name in SHARDED, run_dir)
    fit_metrics = {}
    if cfg.train:
        # weights_only: a checkpoint holds tensors and plain containers, never code to run
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        fit_metrics = dict(trainer.callback_metrics)
    test_metrics = {}
    if cfg.test:
        best_callback = best_checkpoint(trainer)
        best = best_callback.best_model_path if best_callback else ""
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
        end_session(trainer)
        log.info("run directory: %s", run_dir)
    wait_for_started_ranks(trainer)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns ``cfg.optimized_metric`` for sweepers."""
    hint = resume_command(cfg.paths.output_dir)
    record = None
    try:
        with (
            rank_job("scaletrain.train", cfg, resume_hint=hint) as record,
            user_errors(*USER_ERRORS, logged=lambda: record.started),
        ):
            metrics = train(cfg, record)
    except Preempted as preempted:
        # a run stopped before its preflight passed has left nothing to resume
        if is_global_rank_zero() and record is not None and (record.started or not record.new):
            log.info("resume with: %s", hint)
        sys.exit(preempted.code)
    except SIGTERMException:  # Lightning's own handling, where the callback is left out
        sys.exit(EXIT_STATUS)
    return metrics.get(cfg.get("optimized_metric"))


run = command_line("train", main, expand=expand_resume)

if __name__ == "__main__":
    run()
