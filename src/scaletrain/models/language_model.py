"""Language modelling: next-token cross-entropy, perplexity and bits per byte."""

import math

import torch
from torchmetrics import MinMetric, SumMetric

from scaletrain.conventions import IGNORE_INDEX
from scaletrain.models.base import ScaleModule


def exact_sum() -> SumMetric:
    """A sum over every rank, in float64: in float32 a count stops being exact past 2**24."""
    return SumMetric().set_dtype(torch.float64)


class LanguageModel(ScaleModule):
    """Trains ``net`` to predict each next token; perplexity is exp(mean token loss).

    Bits per byte (``<stage>/bpb``) is the targets' total loss in bits over the bytes of
    text they stand for, which compares models across tokenizers. The bytes per token
    come from the data module's ``codec()``; without one, bpb is not logged.
    """

    LOGGED_METRICS = (
        *ScaleModule.LOGGED_METRICS,
        "val/ppl",
        "val/bpb",
        "val/loss_best",
        "val/bpb_best",
        "test/ppl",
        "test/bpb",
    )

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.val_loss_best, self.val_bpb_best = MinMetric(), MinMetric()
        self.val_nats, self.val_bytes = exact_sum(), exact_sum()
        self.test_nats, self.test_bytes = exact_sum(), exact_sum()
        self.token_bytes: torch.Tensor | None = None  # per token id; set where data has a codec

    def find_token_bytes(self) -> None:
        """The bytes of text each token id stands for, from the data module's codec."""
        datamodule = getattr(self.trainer, "datamodule", None)
        codec = getattr(datamodule, "codec", None)
        self.token_bytes = codec().token_bytes().to(self.device) if callable(codec) else None

    def on_validation_start(self) -> None:
        self.find_token_bytes()

    def on_test_start(self) -> None:
        self.find_token_bytes()

    def evaluation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], stage: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        result = super().evaluation_step(batch, stage)
        if self.token_bytes is not None:
            _, targets, losses = result
            flat = targets.flatten()
            real = flat != IGNORE_INDEX
            getattr(self, f"{stage}_nats").update(losses[real].sum(dtype=torch.float64))
            getattr(self, f"{stage}_bytes").update(self.token_bytes[flat[real]].sum())
        return result

    def _log_epoch_metrics(self, stage: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log ``<stage>/ppl`` and, where bytes were counted, ``<stage>/bpb``; return the
        loss and bpb (None without bpb). Every value is computed from metrics synced over
        the ranks, so every rank logs the same."""
        loss = getattr(self, f"{stage}_loss").compute()
        self.log(f"{stage}/ppl", torch.exp(loss), prog_bar=True, sync_dist=True)
        nats, num_bytes = getattr(self, f"{stage}_nats"), getattr(self, f"{stage}_bytes")
        bpb = None
        if self.token_bytes is not None:
            bpb = (nats.compute() / num_bytes.compute() / math.log(2)).float()
            self.log(f"{stage}/bpb", bpb, prog_bar=True, sync_dist=True)
        # logged as plain values, so Lightning does not reset them: the next epoch starts anew
        nats.reset()
        num_bytes.reset()
        return loss, bpb

    def on_train_start(self) -> None:
        self.restart_best(self.val_loss_best, "val/loss")
        self.restart_best(self.val_bpb_best, "val/bpb")

    def on_validation_epoch_end(self) -> None:
        loss, bpb = self._log_epoch_metrics("val")
        self.val_loss_best.update(loss)
        self.log("val/loss_best", self.val_loss_best.compute(), sync_dist=True)
        if bpb is not None:
            self.val_bpb_best.update(bpb)
            self.log("val/bpb_best", self.val_bpb_best.compute(), sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")
