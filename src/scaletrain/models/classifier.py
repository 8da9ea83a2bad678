"""Classification: cross-entropy on integer labels (the seed's sparse cross-entropy), accuracy."""

import torch
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy

from scaletrain.conventions import IGNORE_INDEX
from scaletrain.models.base import ScaleModule


class Classifier(ScaleModule):
    """Trains ``net`` to map inputs to ``num_classes`` logits."""

    LOGGED_METRICS = (*ScaleModule.LOGGED_METRICS, "val/acc", "val/acc_best", "test/acc")

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.hparams["num_classes"] = num_classes
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE_INDEX)
        self.test_acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE_INDEX)
        self.val_acc_best = MaxMetric()

    def evaluation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], stage: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, targets, losses = super().evaluation_step(batch, stage)
        accuracy = getattr(self, f"{stage}_acc")
        accuracy.update(logits, targets)
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=True)
        return logits, targets, losses

    def on_train_start(self) -> None:
        self.restart_best(self.val_acc_best, "val/acc")

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best.update(self.val_acc.compute())
        # computed from already-synced metrics: every rank holds the same value
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True)
