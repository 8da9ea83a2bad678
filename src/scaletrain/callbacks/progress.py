"""The progress bar: Lightning's rich one, without the logger's version.

Lightning shows the logger's version as ``v_num``; scaletrain's TensorBoard version is
the run's name (``mlp-digits,lr=3e-3``), which the bar would cut to a few letters. The
run directory printed above the bar says which run it is.
"""

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics
