"""The ``strategy`` config group, turned into what Lightning's Trainer accepts."""

from lightning.pytorch.strategies import Strategy
from omegaconf import DictConfig

from scaletrain.utils.errors import ConfigError

STRATEGIES = ("auto",)


def build_strategy(cfg: DictConfig) -> str | Strategy:
    """The Lightning strategy for ``cfg.strategy``."""
    if cfg.name not in STRATEGIES:
        raise ConfigError(f"strategy.name={cfg.name}: unknown; valid: {', '.join(STRATEGIES)}")
    return "auto"
