"""The pieces of saving in the background and keeping older saves, on their own."""

import io
import os

import torch

from scaletrain.callbacks.checkpoints import kept_checkpoints
from scaletrain.checkpoint.background import snapshot


def test_a_snapshot_is_a_copy_that_keeps_tied_tensors_tied():
    weight = torch.nn.Parameter(torch.randn(100, 50))
    state = {"embed": weight.detach(), "head": weight.detach(), "view": torch.arange(9.0)[1:]}
    copied = snapshot({"state_dict": state, "loops": {"step": 3}})
    assert copied["state_dict"]["embed"] is copied["state_dict"]["head"]  # written once
    before = weight.detach().clone()
    weight.data.add_(1)  # training goes on: the snapshot keeps the step it was taken at
    assert torch.equal(copied["state_dict"]["embed"], before)
    synchronous, background = io.BytesIO(), io.BytesIO()
    torch.save(state, synchronous)
    torch.save(copied["state_dict"], background)
    # the tied weight is written once (a view is written alone, not its whole storage)
    assert len(background.getvalue()) <= len(synchronous.getvalue()) < 2 * 100 * 50 * 4


def test_kept_checkpoints_are_in_the_order_they_were_written(tmp_path):
    """A run resumed from step 100 writes step 110 after steps 200 and 300 (of the
    abandoned continuation): 110 is the newest."""
    for when, step in enumerate((100, 200, 300, 110)):
        path = tmp_path / f"step-{step:06d}.ckpt"
        path.write_text("x")
        os.utime(path, ns=(when * 10**9, when * 10**9))
    (tmp_path / "last.ckpt").write_text("x")
    assert [p.name for p in kept_checkpoints(tmp_path)] == [
        "step-000100.ckpt",
        "step-000200.ckpt",
        "step-000300.ckpt",
        "step-000110.ckpt",
    ]
