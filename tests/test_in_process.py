"""The train and eval flow end to end, in this process (the fast tier's way to cover the
entry points, the runner and what a run writes; the command line itself is tested in
subprocesses in the slow tier)."""

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import run_in_process

TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("train") / "run"
    metrics = run_in_process(run_dir, *TINY)
    return run_dir, metrics


def test_a_run_writes_metrics_checkpoints_record_and_tensorboard(trained):
    run_dir, metrics = trained
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["metrics"] == pytest.approx(metrics)
    assert set(metrics) >= {"train/loss", "val/loss", "val/acc", "test/loss", "test/acc"}
    assert summary["global_step"] == 6 and summary["epoch"] == 1
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 6
    assert summary["best_checkpoint"].endswith("epoch000-step000006.ckpt")
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").trainer.limit_train_batches == 6
    assert list((run_dir / "tensorboard").iterdir())


def test_eval_of_the_best_checkpoint_reproduces_the_runs_test_metrics(trained, tmp_path):
    run_dir, metrics = trained
    best = json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]
    results = run_in_process(tmp_path / "eval", f"ckpt_path={best}", task="eval")
    assert results["test/loss"] == pytest.approx(metrics["test/loss"], abs=1e-6)
    assert results["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["checkpoint"] == best


def test_a_language_model_logs_perplexity(tmp_path):
    metrics = run_in_process(
        tmp_path / "gpt",
        "experiment=gpt_text",
        "data.max_bytes=60000",
        "data.context_length=32",
        "data.batch_size=8",
        "model.net.dim=32",
        "model.net.num_layers=1",
        *TINY,
        "trainer.val_check_interval=1.0",  # the experiment validates every 100 steps
    )
    assert set(metrics) >= {"val/ppl", "test/ppl", "val/bpb", "val/bpb_best", "test/bpb"}
    # perplexity is exp(loss) of the same targets
    assert metrics["test/ppl"] == pytest.approx(torch.tensor(metrics["test/loss"]).exp().item())
    # byte tokens: one byte per target, so bits per byte is the loss in bits
    for stage in ("val", "test"):
        assert metrics[f"{stage}/bpb"] == pytest.approx(metrics[f"{stage}/loss"] / math.log(2))
    assert metrics["val/bpb_best"] == pytest.approx(metrics["val/loss_best"] / math.log(2))


@pytest.mark.parametrize(
    "saves",
    [
        [],
        ["callbacks.last_checkpoint.every_n_train_steps=1"],  # a save at the final step too
        ["callbacks.model_checkpoint=null"],  # last.ckpt's callback is the only checkpoint one
    ],
    ids=["default", "every-step", "no-best-checkpoint"],
)
def test_a_finished_run_started_again_in_place_reports_what_it_reported(tmp_path, saves):
    # 9 steps: the first epoch (6 batches) validates, the second stops mid-epoch; nothing
    # is left to train in the second attempt, which must still report that validation
    common = [*TINY, "trainer.max_epochs=-1", "trainer.max_steps=9", "test=false", *saves]
    run_dir = tmp_path / "run"
    run_in_process(run_dir, *common)
    first = json.loads((run_dir / "metrics.json").read_text())
    assert {"val/loss", "val/acc", "train/loss"} <= set(first["metrics"])
    run_in_process(run_dir, *common, "ckpt_path=last")
    again = json.loads((run_dir / "metrics.json").read_text())
    assert again["metrics"] == first["metrics"]
    assert (again["global_step"], again["best_score"]) == (
        first["global_step"],
        first["best_score"],
    )


def test_a_run_without_a_best_checkpoint_resumes_and_validates(tmp_path):
    common = [*TINY, "trainer.max_epochs=-1", "test=false", "callbacks.model_checkpoint=null"]
    run_in_process(tmp_path / "run", *common, "trainer.max_steps=3")
    run_in_process(tmp_path / "run", *common, "trainer.max_steps=6", "ckpt_path=last")
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["global_step"] == 6 and "val/acc_best" in summary["metrics"]


@pytest.mark.parametrize("first_steps", [6, 9], ids=["ended-with-an-epoch", "ended-mid-epoch"])
def test_a_run_trained_longer_ends_as_if_it_had_run_straight(tmp_path, first_steps):
    """A run bounded by max_steps, resumed with a later bound: its last save came during an
    epoch's end (Lightning resumes that state by counting the epoch twice, which shifts the
    data order of every later epoch; see compat.store_epoch_end_as_resumable)."""
    common = [*TINY, "trainer.max_epochs=-1", "test=false"]
    run_in_process(tmp_path / "straight", *common, "trainer.max_steps=15")
    run_in_process(tmp_path / "longer", *common, f"trainer.max_steps={first_steps}")
    run_in_process(tmp_path / "longer", *common, "trainer.max_steps=15", "ckpt_path=last")

    def final(name):
        return torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=False)

    final_names = ("straight", "longer")
    straight, longer = (final(name) for name in final_names)
    assert longer["global_step"] == straight["global_step"] == 15
    assert longer["epoch"] == straight["epoch"]
    for name, tensor in straight["state_dict"].items():
        assert torch.equal(longer["state_dict"][name], tensor), name
    summaries = [json.loads((tmp_path / n / "metrics.json").read_text()) for n in final_names]
    assert summaries[0]["metrics"] == summaries[1]["metrics"]
