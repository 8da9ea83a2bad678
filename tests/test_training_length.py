"""Length settings that do not fit the data are said in one line, and the run goes on: a
validation interval longer than an epoch (Lightning would refuse it), a step limit the
epoch limit reaches first (the run would stop early without a word)."""

import json
import logging

import pytest

from tests.helpers import run_cli


def test_an_interval_longer_than_an_epoch_validates_every_epoch_and_says_so(train_here, caplog):
    caplog.set_level(logging.WARNING, logger="scaletrain")
    run = train_here(
        "trainer.val_check_interval=100", "trainer.max_epochs=2", "trainer.max_steps=100"
    )
    assert run.returncode == 0
    summary = json.loads((run.run_dir / "metrics.json").read_text())
    assert summary["global_step"] == 78  # 2 epochs of 39 batches
    assert "val/acc_best" in summary["metrics"]
    said = [record.getMessage() for record in caplog.records if record.name == "scaletrain"]
    assert said == [
        "trainer.val_check_interval=100: an epoch has 39 training batches; validating at "
        "the end of every epoch instead",
        "trainer.max_steps=100: trainer.max_epochs=2 ends the run first, after 78 steps (an "
        "epoch has 39 batches); set trainer.max_epochs=-1 to train 100",
    ]


def test_lengths_that_fit_say_nothing(train_here, caplog):
    caplog.set_level(logging.WARNING, logger="scaletrain")
    run = train_here("trainer.val_check_interval=20", "trainer.max_epochs=1")
    assert run.returncode == 0
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_early_stopping_keeps_the_default_callbacks_and_says_when_it_stops(train_here, caplog):
    caplog.set_level(logging.INFO, logger="scaletrain")
    run = train_here(
        "callbacks=early_stopping",
        "callbacks.early_stopping.patience=2",
        "model.optimizer.lr=3e-2",
        "trainer.max_epochs=200",
    )
    assert run.returncode == 0
    summary = json.loads((run.run_dir / "metrics.json").read_text())
    assert summary["epoch"] < 200
    assert (run.run_dir / "checkpoints" / "last.ckpt").exists()
    assert summary["best_score"] is not None
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("early stop")]
    assert line.startswith("early stopping: val/acc did not improve for 2 validations; stopped")


@pytest.mark.slow  # the command line, whose warnings go to stderr
@pytest.mark.parametrize("debug", ["limit", "overfit"])
def test_the_debug_configs_run_without_a_warning(tmp_path, debug):
    run = run_cli("train", tmp_path / debug, f"debug={debug}", "trainer.max_epochs=2")
    assert run.returncode == 0, run.output
    assert run.stderr == ""
