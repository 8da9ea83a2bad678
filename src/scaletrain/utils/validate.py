"""Preflight checks: a pure function of the composed config, run before anything is built."""

from omegaconf import DictConfig, OmegaConf


def validate(cfg: DictConfig) -> list[str]:
    """Every problem found in ``cfg``, one line each, naming the setting and what is valid."""
    problems = [
        f"{key} is required: set it on the command line, e.g. {key}=..."
        for key in sorted(OmegaConf.missing_keys(cfg))
    ]
    if problems:
        return problems  # later checks would trip over the missing values
    batch_size = cfg.data.get("batch_size")
    if not isinstance(batch_size, int) or batch_size < 1:
        problems.append(f"data.batch_size={batch_size}: must be a positive integer")
    lr = OmegaConf.select(cfg, "model.optimizer.lr")
    if lr is not None and not (isinstance(lr, int | float) and 0 < lr < float("inf")):
        problems.append(f"model.optimizer.lr={lr}: must be a positive finite number")
    max_epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    if max_epochs is not None and max_epochs < -1:
        problems.append(f"trainer.max_epochs={max_epochs}: must be >= 0 (or -1 for no limit)")
    return problems
