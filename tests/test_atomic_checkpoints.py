"""Checkpoint writes are atomic: a kill in the middle of a save leaves the previous
checkpoint whole, and ``ckpt_path=last`` never picks up a partial one."""

import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from scaletrain.checkpoint.atomic import (
    aside_path,
    recover_checkpoint,
    replace_path,
    scratch_path,
    write_file_atomically,
)
from scaletrain.checkpoint.contents import checkpoint_problems, resolve_last

# Writes half of a new checkpoint over the path given, then waits to be killed.
HALF_WRITTEN_SAVE = textwrap.dedent(
    """
    import io, sys, time
    from pathlib import Path
    import torch
    from scaletrain.checkpoint.atomic import write_file_atomically

    def write_half(file):
        data = io.BytesIO()
        torch.save({"state_dict": {"w": torch.full((1000, 1000), 2.0)}}, data)
        file.write(data.getvalue()[: len(data.getvalue()) // 2])
        file.flush()
        print("half written", flush=True)
        time.sleep(120)

    write_file_atomically(Path(sys.argv[1]), write_half)
    """
)


@pytest.mark.slow  # kills a process mid-save
def test_a_kill_during_a_save_leaves_the_previous_checkpoint(tmp_path):
    last = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}}, last)
    save = subprocess.Popen(
        [sys.executable, "-c", HALF_WRITTEN_SAVE, str(last)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert save.stdout.readline().strip() == "half written"
    finally:
        save.send_signal(signal.SIGKILL)
        save.wait(timeout=30)

    assert scratch_path(last).stat().st_size > 0  # the half-written new version, aside
    assert torch.equal(torch.load(last, weights_only=True)["state_dict"]["w"], torch.ones(3))
    assert resolve_last("last", tmp_path) == str(last)


def test_a_finished_save_replaces_the_checkpoint(tmp_path):
    last = tmp_path / "last.ckpt"
    torch.save({"step": 1}, last)
    write_file_atomically(last, lambda file: torch.save({"step": 2}, file))
    assert torch.load(last, weights_only=True) == {"step": 2}
    assert not scratch_path(last).exists()


def test_a_file_and_a_sharded_directory_replace_each_other(tmp_path):
    last = tmp_path / "last.ckpt"
    last.mkdir()
    (last / "meta.pt").write_bytes(b"shards")
    new_file = tmp_path / "new"
    new_file.write_bytes(b"file")
    replace_path(new_file, last)
    assert last.read_bytes() == b"file"

    new_dir = tmp_path / "new_dir"
    new_dir.mkdir()
    (new_dir / "meta.pt").write_bytes(b"shards 2")
    replace_path(new_dir, last)
    assert (last / "meta.pt").read_bytes() == b"shards 2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_kill_between_the_renames_of_a_directory_swap_is_undone(tmp_path):
    """The old checkpoint directory was renamed aside, the new one not yet into place."""
    last = tmp_path / "last.ckpt"
    aside = aside_path(last)
    aside.mkdir()
    (aside / "meta.pt").write_bytes(b"previous")
    assert resolve_last("last", tmp_path) == str(last)
    assert (last / "meta.pt").read_bytes() == b"previous"
    recover_checkpoint(last)  # nothing to undo any more
    assert (last / "meta.pt").read_bytes() == b"previous"


def test_ckpt_path_last_without_a_checkpoint_trains_from_the_start(tmp_path):
    scratch_path(tmp_path / "last.ckpt").write_bytes(b"partial")
    assert resolve_last("last", tmp_path) is None


def test_a_corrupt_last_checkpoint_is_named(tmp_path):
    last = tmp_path / "last.ckpt"
    last.write_bytes(b"PK\x03\x04 damaged")
    model = torch.nn.Linear(2, 2)
    (problem,) = checkpoint_problems(resolve_last("last", tmp_path), model)
    assert problem == f"ckpt_path={last}: not a checkpoint file (truncated or corrupt?)"
