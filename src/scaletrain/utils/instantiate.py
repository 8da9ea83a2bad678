"""Build Lightning objects from config groups whose entries may be switched off with null."""

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every non-null entry of a group such as ``callbacks`` or ``logger``."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None]
