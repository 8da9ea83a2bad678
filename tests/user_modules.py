"""A LightningModule a user writes for their own task: its own loss, steps and metrics.
It subclasses ScaleModule (which builds the net from its config and applies the plans)
and nothing else of scaletrain; its steps know nothing of pipeline stages."""

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from scaletrain.models.base import ScaleModule


class SmoothedClassifier(ScaleModule):
    """Cross-entropy with label smoothing; logs the training batch's accuracy as a plain
    tensor and the validation accuracy as a torchmetrics metric."""

    LOGGED_METRICS = (
        "train/loss", "train/acc", "train/acc_metric", "val/loss", "val/acc", "test/acc"
    )  # fmt: skip

    def __init__(self, num_classes: int, smoothing: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.smoothing = smoothing
        self.train_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.test_accuracy = MulticlassAccuracy(num_classes, average="micro")

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.smoothing)

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        logits = self(inputs)
        loss = self.loss(logits, targets)
        accuracy = (logits.argmax(-1) == targets).float().mean()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", accuracy, sync_dist=True)
        # a torchmetrics object logged on the step: the batch's value, from its forward
        self.train_accuracy(logits, targets)
        self.log("train/acc_metric", self.train_accuracy, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        inputs, targets = batch
        logits = self(inputs)
        self.val_accuracy.update(logits, targets)
        self.log("val/loss", self.loss(logits, targets), sync_dist=True)
        self.log("val/acc", self.val_accuracy)

    def test_step(self, batch, batch_idx):
        inputs, targets = batch
        self.test_accuracy.update(self(inputs), targets)
        self.log("test/acc", self.test_accuracy)


class ManuallyOptimized(SmoothedClassifier):
    """Steps its optimizer itself (Lightning's manual optimization)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        inputs, targets = batch
        loss = self.loss(self(inputs), targets)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss
