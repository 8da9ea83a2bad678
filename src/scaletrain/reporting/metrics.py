"""What a finished run leaves in its directory: metrics.json."""

import json
import math
from pathlib import Path
from typing import Any

import lightning as L

from scaletrain.callbacks.checkpoints import best_checkpoint, latest_checkpoint

METRICS_FILE = "metrics.json"


def as_number(value: Any) -> float:
    """A logged metric (tensor or number) as a float."""
    return float(value.item() if hasattr(value, "item") else value)


def collect_metrics(*metric_dicts: dict[str, Any]) -> dict[str, float]:
    """Merge logged metrics into plain, finite-or-not floats, later dicts winning."""
    merged: dict[str, float] = {}
    for metrics in metric_dicts:
        merged.update({name: as_number(value) for name, value in metrics.items()})
    return dict(sorted(merged.items()))


def write_json(path: Path, summary: dict[str, Any]) -> Path:
    """Write ``summary`` as JSON; non-finite metrics become strings ("nan", "inf")."""
    if "metrics" in summary:
        metrics = summary["metrics"]
        summary = {
            **summary,
            "metrics": {k: v if math.isfinite(v) else str(v) for k, v in metrics.items()},
        }
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def training_summary(trainer: L.Trainer, metrics: dict[str, float]) -> dict[str, Any]:
    """What a training run's ``metrics.json`` holds: the final metrics as numbers, the best
    checkpoint's path and score, the last checkpoint, and where training stopped."""
    best, latest = best_checkpoint(trainer), latest_checkpoint(trainer)
    best_score = best.best_model_score if best else None
    return {
        "metrics": metrics,
        "best_checkpoint": (best.best_model_path or None) if best else None,
        "best_score": as_number(best_score) if best_score is not None else None,
        "last_checkpoint": str(latest.path) if latest and latest.path.exists() else None,
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
    }
