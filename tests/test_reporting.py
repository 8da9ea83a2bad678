"""Pieces of the reporting and measuring code, in process: the sweep summary and the
command that rebuilds it, the benchmark's timing statistic, and the consolidate command's
refusal."""

import json

import pytest
import yaml

from scaletrain import consolidate
from scaletrain import summary as summary_command
from scaletrain.benchmark import block_median
from scaletrain.reporting.sweep import best_job, collect_jobs, markdown_table


def write_job(sweep_dir, number: int, lr: str, acc: float) -> None:
    job = sweep_dir / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"lr={lr}"]))
    (job / "metrics.json").write_text(json.dumps({"metrics": {"val/acc": acc}}))


def test_the_sweep_summary_lists_jobs_in_order_and_picks_the_best(tmp_path):
    for number, lr, acc in [(10, "1e-2", 0.5), (2, "1e-3", 0.9), (1, "3e-3", 0.7)]:
        write_job(tmp_path, number, lr, acc)
    (tmp_path / "3").mkdir()  # a job that never finished: no metrics.json
    jobs = collect_jobs(tmp_path)
    assert [job["job"] for job in jobs] == ["1", "2", "10"]
    assert best_job(jobs, "val/acc", "max")["overrides"] == ["lr=1e-3"]
    assert best_job(jobs, "val/acc", "min")["job"] == "10"
    assert best_job(jobs, "val/loss", "min") is None
    assert markdown_table(jobs, "val/acc").splitlines()[2] == "| 1 | lr=3e-3 | 0.7 |"


def test_block_median_is_the_median_of_block_means_after_warmup():
    # step times 9 (warm-up), then blocks of 1, 1 | 3, 3 | 2, 2
    starts = [0, 9, 10, 11, 14, 17, 19, 21]
    assert block_median(starts, warmup=1, repeats=3) == pytest.approx(2.0)


def test_consolidate_refuses_a_file_in_one_line(tmp_path, capsys):
    (tmp_path / "x.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as stop:
        consolidate.main([str(tmp_path / "x.ckpt")])
    assert str(stop.value).startswith(f"error: ckpt_path={tmp_path / 'x.ckpt'}: not a sharded")


def test_the_summary_command_rebuilds_a_sweeps_summary_from_its_job_directories(tmp_path, caplog):
    (tmp_path / "multirun.yaml").write_text(
        "monitor: {metric: val/acc, mode: max}\noptimized_metric: ${monitor.metric}\n"
    )
    for number, lr, acc in [(0, "1e-3", 0.9), (1, "3e-3", 0.7)]:
        write_job(tmp_path, number, lr, acc)
    write_job(tmp_path, 2, "1e-2", 0.0)
    (tmp_path / "2" / "metrics.json").unlink()  # still running, or stopped
    with caplog.at_level("INFO", logger="scaletrain"):
        summary_command.main([str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["optimized_metric"], summary["mode"]) == ("val/acc", "max")
    assert [job["job"] for job in summary["jobs"]] == ["0", "1"]
    assert summary["best"]["overrides"] == ["lr=1e-3"]
    assert (tmp_path / "summary.md").read_text().splitlines()[2] == "| 0 | lr=1e-3 | 0.9 |"
    assert "2 jobs finished; 1 started and not finished" in caplog.text


def test_the_summary_command_refuses_a_directory_that_is_no_sweep_in_one_line(tmp_path):
    with pytest.raises(SystemExit) as refused:
        summary_command.main([str(tmp_path)])
    assert str(refused.value.code).startswith(f"error: {tmp_path}: not a sweep directory")
