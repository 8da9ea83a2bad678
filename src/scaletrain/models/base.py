"""What every scaletrain LightningModule shares: building the net and its optimizer."""

from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def plain(config: Any) -> Any:
    """An OmegaConf node as plain Python containers (checkpoints store it as hparams)."""
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return config


class ScaleModule(L.LightningModule):
    """Builds ``net`` from its config, so a checkpoint alone can rebuild the module.

    Args:
        net: Hydra config of a plain ``torch.nn.Module`` from ``scaletrain.nets``.
        optimizer: Hydra config of a partial optimizer (``_partial_: true``).
        scheduler: optional Hydra config of a partial LR scheduler, stepped every step.
    """

    def __init__(
        self,
        net: dict,
        optimizer: dict,
        scheduler: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {"net": plain(net), "optimizer": plain(optimizer), "scheduler": plain(scheduler)}
        )
        self.net = instantiate(self.hparams.net)

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.hparams.optimizer)(params=self.parameters())
        if self.hparams.scheduler is None:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler)(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }
