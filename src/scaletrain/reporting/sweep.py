"""A summary of every sweep: each job's parameters and metrics, and the best job."""

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from scaletrain.reporting.record import recorded_overrides

log = logging.getLogger("scaletrain")


def collect_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every finished job under ``sweep_dir``: its number, overrides and metrics."""
    jobs = []

    def job_number(path: Path) -> tuple[int, str]:
        name = path.parent.name
        return (int(name), name) if name.isdigit() else (-1, name)

    for metrics_file in sorted(sweep_dir.glob("*/metrics.json"), key=job_number):
        job_dir = metrics_file.parent
        overrides = recorded_overrides(job_dir, attempt=0) or []  # the sweeper's choice
        summary = json.loads(metrics_file.read_text())
        jobs.append({"job": job_dir.name, "overrides": overrides, **summary})
    return jobs


def best_job(jobs: list[dict], metric: str, mode: str) -> dict | None:
    """The job with the best value of ``metric`` (``mode`` is ``max`` or ``min``)."""
    scored = [job for job in jobs if isinstance(job["metrics"].get(metric), int | float)]
    if not scored:
        return None
    choose = max if mode == "max" else min
    return choose(scored, key=lambda job: job["metrics"][metric])


def markdown_table(jobs: list[dict], metric: str) -> str:
    lines = [f"| job | overrides | {metric} |", "|---|---|---|"]
    for job in jobs:
        value = job["metrics"].get(metric)
        lines.append(f"| {job['job']} | {' '.join(job['overrides'])} | {value} |")
    return "\n".join(lines) + "\n"


def write_summary(sweep_dir: Path, metric: str, mode: str) -> dict[str, Any]:
    """Write ``summary.json`` and ``summary.md`` of the jobs finished in ``sweep_dir``
    (whichever machine or launcher ran them); return the summary."""
    jobs = collect_jobs(sweep_dir)
    summary = {
        "optimized_metric": metric,
        "mode": mode,
        "best": best_job(jobs, metric, mode),
        "jobs": jobs,
    }
    (sweep_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (sweep_dir / "summary.md").write_text(markdown_table(jobs, metric))
    return summary


def report(summary: dict[str, Any], sweep_dir: Path) -> None:
    best, metric = summary["best"], summary["optimized_metric"]
    if best is not None:
        log.info(
            "best job %s: %s=%s (%s)",
            best["job"],
            metric,
            best["metrics"][metric],
            " ".join(best["overrides"]),
        )
    log.info("sweep summary: %s", sweep_dir / "summary.md")


class SweepSummary(Callback):
    """Writes ``summary.json`` and ``summary.md`` into the sweep directory at its end
    (``python -m scaletrain.summary <sweep dir>`` writes them again at any time)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        summary = write_summary(sweep_dir, config.get("optimized_metric"), config.monitor.mode)
        report(summary, sweep_dir)
