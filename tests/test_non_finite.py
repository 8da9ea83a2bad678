"""A NaN or infinite loss stops the run with a message naming the step, on every rank,
and leaves the last checkpoint before it intact; or, by config, the step is skipped.

A learning rate of 1e30 makes the first Adam step blow the weights up, so the second
step's loss overflows."""

import pytest
import torch

from scaletrain.callbacks.non_finite import NonFiniteGuard
from scaletrain.errors import ConfigError

pytestmark = pytest.mark.slow  # starts training runs as subprocesses

EXPLODE = ["model.optimizer.lr=1e30", "trainer.max_epochs=1"]
EVERY_STEP = [
    "callbacks.last_checkpoint.every_n_train_steps=1",
    "callbacks.model_checkpoint.monitor=null",
]


@pytest.mark.parametrize(
    "layout", [[], ["strategy=ddp", "trainer.devices=2"]], ids=["single", "ddp"]
)
def test_non_finite_loss_stops_every_rank_and_keeps_the_last_good_checkpoint(train_cli, layout):
    run = train_cli(*EXPLODE, *EVERY_STEP, *layout)
    assert run.returncode == 2
    assert "Traceback" not in run.output
    assert "error: non-finite loss or gradients at step 1 (epoch 0)" in run.output
    last = torch.load(run.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 1
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())


def test_skip_drops_the_bad_steps_and_finishes(train_cli):
    run = train_cli(*EXPLODE, "callbacks.non_finite_guard.action=skip", "test=false")
    assert run.returncode == 0, run.output
    assert "skipped step 1 (epoch 0): non-finite loss or gradients (1 so far)" in run.output
    last = torch.load(run.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())


def test_unknown_action_is_a_config_error():
    with pytest.raises(
        ConfigError, match="callbacks.non_finite_guard.action=halt: valid: stop, skip"
    ):
        NonFiniteGuard("halt")
