"""A user's own LightningModule (tests/user_modules.py: its own loss, steps and metrics,
knowing nothing of stages) trains under the pipeline like one process: the pipeline
strategy runs the schedule, then the module's steps on the last stage, and every rank
logs what they logged."""

import pytest

from tests.helpers import assert_same_training, parity_run, run_cli, scalars

pytestmark = pytest.mark.slow  # starts training runs as subprocesses

USER_MODULE = [
    "model._target_=tests.user_modules.SmoothedClassifier",
    "model.net.hidden_dims=[64,64]",  # a block for each of 2 stages
    "data.batch_size=32",
    "trainer.accumulate_grad_batches=2",
    "trainer.gradient_clip_val=0.5",
    "test=true",  # the whole test set: its last batch is smaller than the others
]
PIPELINE = [
    "strategy=pipeline",
    "trainer.devices=2",
    "strategy.microbatches=4",
    "trainer.num_sanity_val_steps=0",
]


def test_a_users_lightning_module_trains_under_the_pipeline_like_one_process(tmp_path):
    single = parity_run(tmp_path, "single", *USER_MODULE)
    pipeline = parity_run(tmp_path, "pipeline", *USER_MODULE, *PIPELINE)
    assert_same_training(pipeline, single)
    # what the module logged itself, on the last stage, is what rank 0 wrote
    for name in ("train/acc", "train/acc_metric"):  # a tensor, and a torchmetrics object
        assert scalars(pipeline, name) == pytest.approx(scalars(single, name), abs=1e-6), name
    metrics, expected = pipeline.metrics["metrics"], single.metrics["metrics"]
    for name in ("val/loss", "val/acc", "test/acc"):
        assert metrics[name] == pytest.approx(expected[name], abs=1e-5), name
    assert 0.1 < expected["test/acc"] < 1


def test_a_module_that_steps_its_optimizer_itself_is_refused_by_the_pipeline(tmp_path):
    manual = [
        *USER_MODULE,
        "model._target_=tests.user_modules.ManuallyOptimized",
        "trainer.gradient_clip_val=null",  # which Lightning refuses for manual optimization
        "trainer.accumulate_grad_batches=1",
    ]
    run = run_cli("train", tmp_path / "manual", *manual, *PIPELINE, "trainer.max_steps=2")
    assert run.returncode != 0
    assert (
        "error: strategy=pipeline: the schedule runs each batch's backward, so a module with "
        "automatic_optimization=False has nothing for manual_backward" in run.output
    )
