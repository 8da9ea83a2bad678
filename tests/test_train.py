"""The default run end to end: accuracy, run directory, TensorBoard, eval, resume."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from scaletrain.reporting.tensorboard import MAX_NAME, event_dir
from tests.helpers import CLI_ENV, QUIET, run_cli

# A GPT that trains in seconds, on the text data.
GPT_TINY = [
    "experiment=gpt_text",
    "data.max_bytes=50000",
    "data.context_length=32",
    "model.net.dim=32",
    "model.net.num_layers=1",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]

pytestmark = pytest.mark.slow  # starts training runs as subprocesses


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """``python -m scaletrain.train`` with nothing changed."""
    root = tmp_path_factory.mktemp("default")
    run = run_cli("train", root / "run", f"paths.root_dir={root}")
    assert run.returncode == 0, run.output
    return run


def events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(event_dir(run_dir)))
    accumulator.Reload()
    return accumulator


def test_default_run_reaches_the_target_accuracy(default_run):
    assert default_run.metrics["metrics"]["test/acc"] >= 0.95
    assert f"run directory: {default_run.run_dir}" in default_run.output


def test_the_default_run_prints_the_net_the_test_metrics_and_its_directory_only(default_run):
    # (the progress bar is off in these tests)
    assert default_run.stderr == ""
    lines = default_run.stdout.splitlines()
    assert lines[0] == f"run directory: {default_run.run_dir}"
    assert lines[1:4] == [
        "MLP: 4.8 K parameters (0.02 MB, float32)",
        "  blocks  1 x Sequential    4.2 K",
        "  head    Linear              650",
    ]
    table = lines[4:-1]  # Lightning's table of the test metrics
    assert len(table) == 6 and "test/acc" in table[3] and "test/loss" in table[4]
    assert lines[-1] == f"run directory: {default_run.run_dir}"


def test_verbose_keeps_what_the_libraries_say(train_cli):
    run = train_cli("verbose=true", "trainer.max_epochs=1", "test=false")
    assert run.returncode == 0, run.output
    assert "GPU available: False" in run.output
    assert "rank 0 model state:" in run.output  # a log-file line, on the console too


def test_run_directory_holds_config_checkpoints_log_and_metrics(default_run):
    run_dir = default_run.run_dir
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "train.log").read_text().count("run directory") == 2
    summary = default_run.metrics
    assert Path(summary["best_checkpoint"]).parent == run_dir / "checkpoints"
    assert Path(summary["best_checkpoint"]).is_file()
    for name in ("train/loss", "val/loss", "val/acc", "test/loss", "test/acc"):
        assert isinstance(summary["metrics"][name], float)
    assert summary["best_score"] == pytest.approx(summary["metrics"]["val/acc_best"])
    assert summary["epoch"] == 50


def test_tensorboard_has_the_curves_and_the_hyperparameters(default_run):
    accumulator = events(default_run.run_dir)
    scalars = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/loss", "val/acc", "test/acc", "test/loss"} <= scalars
    # the learning rate is a training curve; Lightning's epoch count is left out, so the
    # first card groups are the learning curves, not `epoch` and `lr-Adam`
    assert not {name for name in scalars if "/" not in name}
    # train/loss per step: one point every log_every_n_steps (10) of 50 x 39 steps
    assert len(accumulator.Scalars("train/loss")) == 195
    assert len(accumulator.Scalars("val/acc")) == 50
    # the HPARAMS entry: the short list of settings, its end, and the experiment's columns
    content = accumulator.PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert set(hparams) == {
        "model", "data", "experiment", "strategy", "world_size", "global_batch", "lr", "seed"
    }  # fmt: skip
    assert hparams["lr"].number_value == pytest.approx(1e-3)
    assert (hparams["model"].string_value, hparams["data"].string_value) == ("mlp", "digits")
    assert hparams["global_batch"].number_value == 32
    end = HParamsPluginData.FromString(content["_hparams_/session_end_info"])
    assert end.session_end_info.status == api_pb2.Status.STATUS_SUCCESS
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    # TensorBoard ticks the first five metrics and the settings marked as differing
    metrics = [info.name.tag for info in experiment.metric_infos]
    assert metrics[:5] == ["val/acc_best", "val/acc", "val/loss", "test/acc", "test/loss"]
    assert not [name for name in metrics if name.startswith("perf/")]
    ticked = {info.name for info in experiment.hparam_infos if info.differs}
    assert ticked == {"model", "data", "strategy", "lr"}


def test_tensorboard_lists_the_run_by_name_then_date(default_run):
    index = default_run.run_dir.parent / "outputs" / "tensorboard"
    (entry,) = index.iterdir()
    assert entry.name == f"mlp-digits @ {default_run.run_dir.name}"
    assert entry.is_symlink() and entry.resolve() == event_dir(default_run.run_dir).resolve()


def test_tensorboard_names_the_run_after_what_ran(default_run, train_here):
    assert event_dir(default_run.run_dir).name == "mlp-digits"
    run = train_here("model.optimizer.lr=3e-3", "trainer.max_epochs=1", "test=false")
    assert run.returncode == 0, run.output
    assert event_dir(run.run_dir).name == "mlp-digits,lr=3e-3,max_epochs=1,test=false"


def test_eval_reproduces_the_training_test_accuracy(default_run, eval_here):
    best = default_run.metrics["best_checkpoint"]
    run = eval_here(f"ckpt_path={best}")
    assert run.returncode == 0, run.output
    trained = default_run.metrics["metrics"]["test/acc"]
    assert abs(run.metrics["metrics"]["test/acc"] - trained) <= 1e-3
    assert run.metrics["checkpoint"] == best


def test_eval_overrides_of_data_still_apply(default_run, eval_here):
    best = default_run.metrics["best_checkpoint"]
    run = eval_here(f"ckpt_path={best}", "data.batch_size=7")
    assert run.returncode == 0, run.output
    # The metric is over all test samples, whatever the batch size.
    trained = default_run.metrics["metrics"]["test/acc"]
    assert abs(run.metrics["metrics"]["test/acc"] - trained) <= 1e-3


def test_resume_continues_from_the_saved_epoch_and_step(train_here):
    common = ["trainer.max_epochs=6", "test=false"]
    straight = train_here(*common, name="straight")
    first = train_here("trainer.max_epochs=3", "test=false", name="first")
    last = first.run_dir / "checkpoints" / "last.ckpt"
    resumed = train_here(*common, f"ckpt_path={last}", name="resumed")
    for run in (straight, first, resumed):
        assert run.returncode == 0, run.output

    assert torch.load(last, weights_only=True)["global_step"] == 3 * 39
    assert resumed.metrics["global_step"] == straight.metrics["global_step"] == 6 * 39
    # The resumed run logged only the steps after the checkpoint ...
    steps = [event.step for event in events(resumed.run_dir).Scalars("train/loss")]
    assert min(steps) > 3 * 39
    # ... and ends exactly where the uninterrupted run ends.
    final = {
        name: torch.load(run.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
        for name, run in (("straight", straight), ("resumed", resumed))
    }
    for key, tensor in final["straight"]["state_dict"].items():
        torch.testing.assert_close(final["resumed"]["state_dict"][key], tensor, rtol=0, atol=0)
    assert resumed.metrics["metrics"]["val/loss"] == straight.metrics["metrics"]["val/loss"]


def test_same_seed_same_run(train_here):
    runs = [train_here("trainer.max_epochs=2", "seed=5", name=f"r{i}") for i in range(2)]
    assert runs[0].metrics["metrics"] == runs[1].metrics["metrics"]
    other = train_here("trainer.max_epochs=2", "seed=6", name="other")
    assert other.metrics["metrics"]["val/loss"] != runs[0].metrics["metrics"]["val/loss"]


class FakeTrainer:
    def __init__(self, ckpt_path):
        self.ckpt_path = ckpt_path
        best = ModelCheckpoint(monitor="val/acc", mode="max")
        best.best_model_score = torch.tensor(0.9)
        self.callbacks = self.checkpoint_callbacks = [best]


@pytest.mark.parametrize(
    ("ckpt_path", "name", "expected"),
    [("last.ckpt", "val/acc", 0.9), (None, "val/acc", 0.5), ("last.ckpt", "val/loss", 0.5)],
    ids=["resume", "fresh", "resume-of-another-metric"],
)
def test_best_score_survives_a_resume_and_only_a_resume(ckpt_path, name, expected):
    """The restored best score is the monitored metric's: it seeds only that metric's best."""
    from torchmetrics import MaxMetric

    from scaletrain.models.classifier import Classifier
    from tests.helpers import compose_train

    model = instantiate(compose_train().model)
    model.trainer = FakeTrainer(ckpt_path)
    best = MaxMetric()
    best.update(torch.tensor(0.99))  # e.g. the sanity check's partial validation
    Classifier.restart_best(model, best, name)
    best.update(torch.tensor(0.5))
    assert best.compute().item() == pytest.approx(expected)


def test_mid_epoch_resume_continues_with_the_next_batch_of_the_epoch(train_here):
    """A checkpoint written after step 20 of a 39-step epoch resumes at batch 21 of that
    epoch, in the same order: every loss after it equals the uninterrupted run's."""
    common = ["trainer.log_every_n_steps=1", "test=false"]
    straight = train_here(*common, "trainer.max_epochs=2", name="straight")
    first = train_here(
        *common,
        "trainer.max_steps=30",
        "+callbacks.model_checkpoint.every_n_train_steps=20",
        "callbacks.model_checkpoint.monitor=null",
        "callbacks.model_checkpoint.save_top_k=-1",
        name="first",
    )
    (step_20,) = (first.run_dir / "checkpoints").glob("*step000020.ckpt")
    resumed = train_here(*common, "trainer.max_epochs=2", f"ckpt_path={step_20}", name="resumed")
    for run in (straight, first, resumed):
        assert run.returncode == 0, run.output

    reference = {e.step: e.value for e in events(straight.run_dir).Scalars("train/loss")}
    after = {e.step: e.value for e in events(resumed.run_dir).Scalars("train/loss")}
    assert min(after) == 20 and len(after) == 2 * 39 - 20
    for step, loss in after.items():
        assert loss == reference[step], f"step {step}"
    assert resumed.metrics["metrics"]["val/loss"] == straight.metrics["metrics"]["val/loss"]


def shortened(name: str) -> str:
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 3] + "..."


def test_an_eval_has_its_own_folder_and_the_name_and_settings_of_the_run_it_tests(tmp_path):
    trained = run_cli("train", tmp_path / "gpt", *GPT_TINY, "trainer.max_steps=2", "test=false")
    assert trained.returncode == 0, trained.output
    evaluated = subprocess.run(
        [sys.executable, "-m", "scaletrain.eval", f"paths.root_dir={tmp_path}", *QUIET,
         f"ckpt_path={trained.run_dir}/checkpoints/last.ckpt"],
        cwd=tmp_path, env=CLI_ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert "Be aware" not in evaluated.stderr  # Lightning's warning about callbacks: quiet
    (eval_dir,) = (tmp_path / "outputs" / "evals").iterdir()
    assert event_dir(eval_dir).name == shortened(f"eval-{event_dir(trained.run_dir).name}")
    content = events(eval_dir).PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert (hparams["model"].string_value, hparams["data"].string_value) == ("gpt", "text")
