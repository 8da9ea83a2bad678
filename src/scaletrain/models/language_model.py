"""Language modelling: next-token cross-entropy and perplexity."""

import torch
from torchmetrics import MinMetric

from scaletrain.models.base import ScaleModule


class LanguageModel(ScaleModule):
    """Trains ``net`` to predict each next token; perplexity is exp(mean token loss)."""

    LOGGED_METRICS = (*ScaleModule.LOGGED_METRICS, "val/ppl", "val/loss_best", "test/ppl")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.val_loss_best = MinMetric()

    def _log_perplexity(self, stage: str) -> torch.Tensor:
        loss = getattr(self, f"{stage}_loss").compute()
        # computed from an already-synced metric: every rank holds the same value
        self.log(f"{stage}/ppl", torch.exp(loss), prog_bar=True, sync_dist=True)
        return loss

    def on_train_start(self) -> None:
        self.restart_best(self.val_loss_best)

    def on_validation_epoch_end(self) -> None:
        self.val_loss_best.update(self._log_perplexity("val"))
        self.log("val/loss_best", self.val_loss_best.compute(), sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self._log_perplexity("test")
