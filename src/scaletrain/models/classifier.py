"""Classification: cross-entropy on integer labels (the seed's sparse cross-entropy), accuracy."""

import torch
import torch.nn.functional as F
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from scaletrain.data.datasets import IGNORE_INDEX
from scaletrain.models.base import ScaleModule


class Classifier(ScaleModule):
    """Trains ``net`` to map inputs to ``num_classes`` logits."""

    def __init__(
        self,
        net: dict,
        optimizer: dict,
        num_classes: int,
        scheduler: dict | None = None,
    ) -> None:
        super().__init__(net=net, optimizer=optimizer, scheduler=scheduler)
        self.hparams["num_classes"] = num_classes
        # One metric object per stage: torchmetrics state must not mix val and test.
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE_INDEX)
        self.test_acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE_INDEX)
        self.val_acc_best = MaxMetric()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        inputs, targets = batch
        loss = F.cross_entropy(self(inputs), targets, ignore_index=IGNORE_INDEX)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        inputs, targets = batch
        logits = self(inputs)
        # Per-sample losses of the real samples only: padding must not dilute the mean.
        losses = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="none")
        loss_metric, acc_metric = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_acc")
        loss_metric.update(losses[targets != IGNORE_INDEX])
        acc_metric.update(logits, targets)
        self.log(f"{stage}/loss", loss_metric, on_step=False, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/acc", acc_metric, on_step=False, on_epoch=True, prog_bar=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_train_start(self) -> None:
        self.val_acc_best.reset()  # forget the sanity check's partial validation

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best.update(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=False)

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")
