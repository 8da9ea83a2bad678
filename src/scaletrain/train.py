"""Train a model: ``python -m scaletrain.train [group=option] [key=value ...]``.

compose config -> check it -> build data, model, strategy, callbacks, loggers, Trainer
-> fit -> test the best checkpoint -> metrics.json -> return the optimized metric.
``python -m scaletrain.train resume=<run dir>`` continues a run where it stopped.
"""

import logging
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from scaletrain.callbacks.checkpoints import best_checkpoint, metrics_since_start
from scaletrain.checkpoint.contents import checkpoint_step, resolve_last
from scaletrain.cli import runner
from scaletrain.cli.resume import expand_resume
from scaletrain.config import CONFIG_DIR
from scaletrain.reporting.metrics import collect_metrics, training_summary
from scaletrain.reporting.record import RunRecord, resume_command
from scaletrain.runtime.ranks import elastic_restarts, is_global_rank_zero

log = logging.getLogger("scaletrain")


def say_early_stop(trainer: L.Trainer) -> None:
    """One line where early stopping ended training."""
    for callback in trainer.early_stopping_callbacks:
        if callback.stopped_epoch and trainer.is_global_zero:
            log.info(
                "early stopping: %s did not improve for %d validations; stopped at epoch %d, "
                "step %d (best %.4g)",
                callback.monitor,
                callback.wait_count,
                trainer.current_epoch,
                trainer.global_step,
                callback.best_score.item(),
            )


def train(cfg: DictConfig, record: RunRecord) -> dict[str, float]:
    """Fit and test as ``cfg`` says; return the final metrics."""
    runner.preflight(cfg)
    checkpoint_dir = OmegaConf.select(cfg, "callbacks.last_checkpoint.dirpath")
    requested = cfg.ckpt_path
    restarts = elastic_restarts()
    if requested is None and restarts:  # workers torchrun's agent restarted go on
        requested = "last"
        if is_global_rank_zero():
            log.info("restart %d by torchrun's agent: resuming from the run's last.ckpt", restarts)
    ckpt = resolve_last(requested, Path(checkpoint_dir or record.run_dir / "checkpoints"))
    resuming_in_place = requested == "last" and not record.new
    hint = f"{resume_command(record.run_dir)} resumes with the run's own settings"
    attempt = runner.start(cfg, record, ckpt, hint if resuming_in_place else None)
    model, datamodule, trainer = attempt.model, attempt.datamodule, attempt.trainer
    if ckpt is not None and cfg.train and trainer.is_global_zero:
        log.info("resuming from %s (step %s)", ckpt, checkpoint_step(Path(ckpt)))

    ckpt_path = attempt.loadable(ckpt)
    fit_metrics = {}
    if cfg.train:
        # weights_only: a checkpoint holds tensors and plain containers, never code to run
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        fit_metrics = metrics_since_start(trainer)
        say_early_stop(trainer)
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
    attempt.finish(training_summary(trainer, metrics))
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns ``cfg.optimized_metric`` for sweepers."""
    hint = resume_command(cfg.paths.output_dir)
    metrics = runner.run_job("scaletrain.train", cfg, lambda record: train(cfg, record), hint)
    return metrics.get(cfg.get("optimized_metric"))


run = runner.command_line("train", main, expand=expand_resume)

if __name__ == "__main__":
    run()
