"""Evaluate a checkpoint on the test split: ``python -m scaletrain.eval ckpt_path=...``.

The model, data, precision and test limit are those of the training run that wrote the
checkpoint (read from its run directory's record), so the result reproduces that run's
test metrics; overrides of those settings on this command line still apply.
"""

import logging
from pathlib import Path

import hydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from scaletrain.cli import runner
from scaletrain.config import CONFIG_DIR
from scaletrain.errors import ConfigError
from scaletrain.reporting.metrics import collect_metrics
from scaletrain.reporting.record import RunRecord, checkpoint_run_dir, recorded_config
from scaletrain.runtime.launch import job_overrides

log = logging.getLogger("scaletrain")

# What a test result depends on besides the weights: taken from the training run.
ADOPTED = ("data", "model", "monitor", "trainer.precision", "trainer.limit_test_batches")


def training_run_config(ckpt_path: Path) -> DictConfig | None:
    """The composed config of the run whose ``checkpoints/`` holds ``ckpt_path`` (its
    latest attempt), if recorded."""
    return recorded_config(checkpoint_run_dir(ckpt_path))


def adopt_run_config(cfg: DictConfig, run_cfg: DictConfig, overrides: list[str]) -> None:
    """Take the training run's data, model, precision and test limit, except where this
    command's own ``overrides`` (read with Hydra's parser: ``data=text``, ``data.x=1``,
    ``+data.x=1``, ``~data.x``) change them: those keep what this command composed."""
    parsed = [
        override
        for override in OverridesParser.create().parse_overrides(overrides)
        if not override.is_hydra_override()
        and any(
            override.key_or_group == name or override.key_or_group.startswith(f"{name}.")
            for name in ADOPTED
        )
    ]
    own = {
        override.key_or_group: plain(OmegaConf.select(cfg, override.key_or_group))
        for override in parsed
        if not override.is_delete()
    }
    deleted = [override.key_or_group for override in parsed if override.is_delete()]
    with open_dict(cfg):
        for key in ADOPTED:
            OmegaConf.update(cfg, key, plain(OmegaConf.select(run_cfg, key)), merge=False)
        for key in sorted(own, key=lambda key: key.count(".")):  # a group before its keys
            OmegaConf.update(cfg, key, own[key], merge=False)
        for key in deleted:
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(cfg, parent) if parent else cfg
            if isinstance(node, DictConfig):
                node.pop(leaf, None)


def plain(value: object) -> object:
    """A config node as plain containers (references kept as ``${...}``), so that it can be
    set elsewhere; other values as they are."""
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def evaluate(cfg: DictConfig, record: RunRecord) -> dict[str, float]:
    """Test ``cfg.ckpt_path``; return the test metrics and write them to metrics.json."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        runner.preflight(cfg)  # says that ckpt_path is required
    ckpt_path = Path(cfg.ckpt_path)
    if not ckpt_path.exists():
        raise ConfigError(f"ckpt_path={ckpt_path}: no such file; give a .ckpt written by train")
    run_cfg = training_run_config(ckpt_path) if cfg.use_run_config else None
    if run_cfg is not None:
        adopt_run_config(cfg, run_cfg, job_overrides())
    runner.preflight(cfg)
    attempt = runner.start(cfg, record, str(ckpt_path))
    if run_cfg is not None:
        log.info("model, data and test settings taken from the training run's config")
    (results,) = attempt.trainer.test(
        attempt.model,
        datamodule=attempt.datamodule,
        ckpt_path=attempt.loadable(str(ckpt_path)),
        weights_only=True,
    )
    metrics = collect_metrics(results)
    attempt.finish({"metrics": metrics, "checkpoint": str(ckpt_path.resolve())})
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    runner.run_job("scaletrain.eval", cfg, lambda record: evaluate(cfg, record))


run = runner.command_line("eval", main)

if __name__ == "__main__":
    run()
