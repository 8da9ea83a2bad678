"""Write a sweep's summary again from its job directories, at any time:
``python -m scaletrain.summary outputs/multiruns/<date>_<time>``.

A sweep writes summary.json and summary.md when its launching command ends. Where that
command did not see the end (a login session dropped while SLURM ran the jobs, a sweep
stopped and some jobs resumed by hand), this writes them from what the jobs left: each
finished job's metrics.json and recorded overrides. Jobs still running or stopped are
counted, not listed.
"""

import argparse
import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

from scaletrain.reporting.record import attempt_dirs
from scaletrain.reporting.sweep import report, write_summary

SWEEP_CONFIG = "multirun.yaml"  # written by Hydra when the sweep starts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the sweep's directory")
    args = parser.parse_args(argv)
    sweep_dir: Path = args.sweep_dir
    config_file = sweep_dir / SWEEP_CONFIG
    if not config_file.is_file():
        sys.exit(
            f"error: {sweep_dir}: not a sweep directory (no {SWEEP_CONFIG} in it); give the "
            "directory a sweep printed, e.g. outputs/multiruns/<date>_<time>"
        )
    config = OmegaConf.load(config_file)
    metric = OmegaConf.select(config, "optimized_metric")
    mode = OmegaConf.select(config, "monitor.mode")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = write_summary(sweep_dir, metric, mode)
    started = [path for path in sweep_dir.iterdir() if path.is_dir() and attempt_dirs(path)]
    unfinished = len(started) - len(summary["jobs"])
    logging.getLogger("scaletrain").info(
        "%d jobs finished%s",
        len(summary["jobs"]),
        f"; {unfinished} started and not finished (running, or stopped)" if unfinished else "",
    )
    report(summary, sweep_dir)


if __name__ == "__main__":
    main()
