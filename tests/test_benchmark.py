"""The benchmark runs end to end in its tiny mode and reports every figure."""

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow  # starts training runs as subprocesses


def test_tiny_benchmark_writes_every_field(tmp_path):
    output = tmp_path / "benchmark.json"
    done = subprocess.run(
        [sys.executable, "-m", "scaletrain.benchmark", "--tiny", "--output", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(output.read_text())

    for workload in ("gpt", "mlp"):
        figures = results["overhead"][workload]
        assert figures["plain_step_sec"] > 0 and figures["trainer_step_sec"] > 0
        assert figures["overhead_ratio"] == figures["trainer_step_sec"] / figures["plain_step_sec"]
        assert figures["time_to_first_step_sec"] > 0
    assert results["import_time_sec"] > 0
    scaling = results["scaling"]
    assert (
        scaling["speedup"] == scaling["samples_per_sec_2_ranks"] / scaling["samples_per_sec_1_rank"]
    )
    memory = results["memory"]
    # ddp and model_sharded too outside --tiny
    assert set(memory) == {"single", "fsdp", "pipeline"}
    for figures in memory.values():
        assert figures["model_state"] == (
            figures["params"] + figures["grads"] + figures["optimizer_state"]
        )
        assert figures["peak_rss_bytes"] > figures["model_state"]
    assert memory["fsdp"]["model_state_vs_single"] < 0.6
    assert memory["pipeline"]["model_state_vs_single"] < 0.7  # one of 2 stages per rank
    pipeline = results["pipeline"]
    assert set(pipeline["microbatches"]) == {"2"}  # 1, 2, 4 and 8 outside --tiny
    for count, figures in pipeline["microbatches"].items():
        assert figures["ideal_fill"] == int(count) / (int(count) + pipeline["stages"] - 1)
        assert figures["efficiency"] == (
            figures["samples_per_sec"] / (pipeline["stages"] * pipeline["samples_per_sec_single"])
        )
        assert figures["efficiency_vs_ideal"] == figures["efficiency"] / figures["ideal_fill"]
        assert figures["vs_reference"] == (
            figures["samples_per_sec"] / figures["reference_samples_per_sec"]
        )
        assert len(figures["busy_fraction"]) == 2
        assert all(0 < fraction <= 1 for fraction in figures["busy_fraction"])
    # the timeline of the last step: each rank's line shows its forwards and backwards
    assert [line[:8] for line in pipeline["timeline"][:2]] == ["rank 0 |", "rank 1 |"]
    assert all({"F", "B"} <= set(line) for line in pipeline["timeline"][:2])
    # all four outside --tiny: 1f1b and interleaved_zero_bubble too
    assert set(pipeline["schedules"]) == {"interleaved_1f1b", "zbv_zero_bubble"}
    for schedule, counts in pipeline["schedules"].items():
        for count, figures in counts.items():
            per_rank = 1 if schedule == "1f1b" else 2
            assert figures["stages_per_rank"] == per_rank
            assert figures["ideal_fill"] == int(count) / (int(count) + 1 / per_rank)
            assert figures["efficiency_vs_ideal"] == figures["efficiency"] / figures["ideal_fill"]
    validation = pipeline["validation"]
    assert validation["speedup"] == (
        validation["samples_per_sec"] / validation["samples_per_sec_single"]
    )
    setup = results["setup_memory"]
    for name in ("ddp_2", "fsdp_2"):  # fsdp on 4 ranks outside --tiny
        figures = setup[name]
        assert figures["setup_peak_vs_params"] == (
            figures["setup_peak_bytes"] / figures["params_full_bytes"]
        )
        assert figures["baseline_bytes"] > 0 and figures["training_peak_bytes"] > 0
    assert setup["ddp_2"]["params_full_bytes"] == setup["fsdp_2"]["params_full_bytes"]
    tokens = results["token_memory"]
    assert tokens["large"]["shard_bytes"] > 9 * tokens["small"]["shard_bytes"]
    assert tokens["large_vs_small"] == (
        tokens["large"]["peak_rss_bytes"] / tokens["small"]["peak_rss_bytes"]
    )
    for figures in results["checkpointing"].values():  # single and fsdp 2
        assert figures["sync_saves"] == figures["async_saves"] >= 2
        assert figures["async_vs_sync"] == figures["async_stall_sec"] / figures["sync_stall_sec"]
        assert figures["checkpoint_bytes"] > 0 and figures["disk_write_mb_per_sec"] > 0
    assert set(results["checkpointing"]) == {"single", "fsdp_2"}
    assert "| training time lost per save, fsdp 2," in results["table"]
    assert results["compile"] is None  # measured outside --tiny only
    assert "| ddp 2 ranks / 1 rank, samples/s |" in results["table"]
    assert results["table"] in done.stdout
    # quiet: the table and where it went, no library's lines and no progress bars
    assert done.stderr == ""
    assert done.stdout.startswith("--tiny: a smoke test")
    # tiny figures are labelled as what they are, never set beside a target
    assert results["table"].startswith("--tiny: a smoke test")
    assert "<= 1.15x" not in results["table"] and "(not comparable)" in results["table"]
