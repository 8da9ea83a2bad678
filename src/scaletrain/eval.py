"""Evaluate a checkpoint on the test split: ``python -m scaletrain.eval ckpt_path=...``.

The model, data, precision and test limit are those of the training run that wrote the
checkpoint (read from its run directory's ``.hydra/config.yaml``), so the result
reproduces that run's test metrics; overrides of those settings on this command line
still apply.
"""

import logging
import sys
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from scaletrain.config import CONFIG_DIR
from scaletrain.consolidate import loadable_checkpoint
from scaletrain.parallel.strategy import SHARDED
from scaletrain.train import USER_ERRORS, build_trainer
from scaletrain.utils.checkpoints import checkpoint_problems
from scaletrain.utils.errors import ConfigError, user_errors
from scaletrain.utils.launch import job_overrides, rank_job, wait_for_started_ranks
from scaletrain.utils.overrides import command_line
from scaletrain.utils.record import RunRecord, recorded_config
from scaletrain.utils.run import collect_metrics, write_json
from scaletrain.utils.signals import Preempted
from scaletrain.utils.tensorboard import end_session, start_session
from scaletrain.utils.validate import validate

log = logging.getLogger("scaletrain")


def training_run_config(ckpt_path: Path) -> DictConfig | None:
    """The composed config of the run whose ``checkpoints/`` holds ``ckpt_path`` (its
    latest attempt), if recorded."""
    return recorded_config(ckpt_path.resolve().parent.parent)


# What a test result depends on besides the weights: taken from the training run.
ADOPTED = ("data", "model", "monitor", "trainer.precision", "trainer.limit_test_batches")


def adopt_run_config(cfg: DictConfig, run_cfg: DictConfig, overrides: list[str]) -> None:
    """Take the training run's data, model, precision and test limit, then re-apply this
    command's own overrides of those settings."""
    with open_dict(cfg):
        for key in ADOPTED:
            OmegaConf.update(cfg, key, OmegaConf.select(run_cfg, key), merge=False)
        for override in overrides:
            key, _, value = override.partition("=")
            if key in ADOPTED or any(key.startswith(f"{name}.") for name in ADOPTED):
                OmegaConf.update(cfg, key, OmegaConf.from_dotlist([f"v={value}"]).v)


def evaluate(cfg: DictConfig, record: RunRecord) -> dict[str, float]:
    """Test ``cfg.ckpt_path``; return the test metrics and write them to metrics.json."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ConfigError(validate(cfg))
    ckpt_path = Path(cfg.ckpt_path)
    if not ckpt_path.exists():
        raise ConfigError(f"ckpt_path={ckpt_path}: no such file; give a .ckpt written by train")
    run_cfg = training_run_config(ckpt_path) if cfg.use_run_config else None
    if run_cfg is not None:
        adopt_run_config(cfg, run_cfg, job_overrides())
    problems = validate(cfg)
    if problems:
        raise ConfigError(problems)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    problems = checkpoint_problems(str(ckpt_path), model)
    if problems:
        raise ConfigError(problems)
    trainer = build_trainer(cfg, model)
    record.write(cfg)
    run_dir = record.run_dir
    if trainer.is_global_zero:
        start_session(trainer, cfg)
    if run_cfg is not None:
        log.info("model, data and test settings taken from the training run's config")
    loadable = loadable_checkpoint(str(ckpt_path), cfg.strategy.name in SHARDED, run_dir)
    (results,) = trainer.test(model, datamodule=datamodule, ckpt_path=loadable, weights_only=True)
    metrics = collect_metrics(results)
    if trainer.is_global_zero:
        write_json(
            run_dir / "metrics.json", {"metrics": metrics, "checkpoint": str(ckpt_path.resolve())}
        )
        end_session(trainer)
        log.info("run directory: %s", run_dir)
    wait_for_started_ranks(trainer)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    try:
        with (
            rank_job("scaletrain.eval", cfg) as record,
            user_errors(*USER_ERRORS, logged=lambda: record.started),
        ):
            evaluate(cfg, record)
    except Preempted as preempted:
        sys.exit(preempted.code)


run = command_line("eval", main)

if __name__ == "__main__":
    run()
