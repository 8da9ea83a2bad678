"""A disk that fills up during a run, and a write that fails: one line on stderr naming
the checkpoint, the space the save needed and had, the checkpoint that remains and the
resume command; exit 1; nothing partial left; every rank of a sharded save stops.

The full disk is a small tmpfs, mounted where the tests may (root); a failed write
without one is a file-size limit (``RLIMIT_FSIZE``: writes past it fail with EFBIG)."""

import re
import resource
import subprocess
from pathlib import Path

import pytest

from scaletrain.checkpoint.contents import checkpoint_step
from tests.helpers import CLI_ENV, PARITY_STRATEGIES, cli_command, resume_cli, run_cli

pytestmark = pytest.mark.slow  # training runs as subprocesses

# An MLP whose checkpoint (weights and Adam's state) is 3.6 MB, saved every 5 steps: a
# 6 MB disk takes the first save, not a second beside it (a save replaces last.ckpt only
# once the new one is complete).
RUN = [
    "model.net.hidden_dims=[512,512]",
    "callbacks.last_checkpoint.every_n_train_steps=5",
    "trainer.max_steps=20",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MB file system of its own."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def assert_nothing_partial(checkpoints: Path) -> None:
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt"]


LAYOUTS = {
    "single": [],
    "fsdp": PARITY_STRATEGIES["fsdp"],
    # the failed write is heard of at the next save, or at the end: said the same way
    "single-async": ["callbacks.last_checkpoint.async_save=true"],
    "fsdp-async": [*PARITY_STRATEGIES["fsdp"], "callbacks.last_checkpoint.async_save=true"],
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_full_disk_is_one_line_and_the_run_resumes_once_there_is_room(small_disk, layout):
    run = run_cli("train", small_disk / "run", *RUN, *LAYOUTS[layout])
    assert run.returncode == 1, run.output
    checkpoints = small_disk / "run" / "checkpoints"
    (line,) = error_lines(run.stderr)
    assert line.startswith(
        f"error: checkpoint not saved: writing {checkpoints / 'last.ckpt'} failed ("
    )
    # a rank whose write failed tells the others through the checkpoint library, which
    # carries its error's words but not the OSError behind them
    if layout.startswith("single"):
        assert "failed (No space left on device); the save needs 3.6 MB, " in line
    else:
        assert re.search(r"; the save needs about 3\.\d MB \(1\.8 MB from each of 2 ranks\)", line)
    assert re.search(r", \d\.\d MB is free there; ", line)  # what the tmpfs had left
    assert (
        f"nothing of it is left, the last complete checkpoint, {checkpoints / 'last.ckpt'} "
        f"(step 5), is intact; free space, then resume with: python -m scaletrain.train "
        f"resume={small_disk / 'run'}"
    ) in line
    assert "Traceback" not in run.output
    assert_nothing_partial(checkpoints)
    assert checkpoint_step(checkpoints / "last.ckpt") == 5  # it loads: read from it
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    resumed = resume_cli(line)
    assert resumed.returncode == 0, resumed.output
    assert resumed.metrics["global_step"] == 20


def test_a_failed_first_write_says_no_checkpoint_remains(tmp_path):
    """Writes past 2 MB fail (the file-size limit): the first save of 3.6 MB does."""
    limit = 2 * 2**20

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    done = subprocess.run(
        cli_command("train", run_dir, *RUN),
        cwd=tmp_path,
        env=CLI_ENV,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit_file_size,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = error_lines(done.stderr)
    assert line.startswith(
        f"error: checkpoint not saved: writing {run_dir / 'checkpoints' / 'last.ckpt'} failed "
        "(File too large); the save needs 3.6 MB"
    )
    assert line.endswith(
        "nothing of it is left, no complete checkpoint was saved before it; free space, "
        "then run again"
    )
    assert list((run_dir / "checkpoints").iterdir()) == []
