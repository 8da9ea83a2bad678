"""``logger=wandb``: Lightning's W&B logger without the warning it makes W&B print."""

from lightning.pytorch.loggers import WandbLogger

from scaletrain import compat


class QuietWandbLogger(WandbLogger):
    """Lightning's WandbLogger, minus the ``anonymous=None`` argument W&B warns about."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        compat.drop_unset_wandb_anonymous(self)
