"""Periodic checkpoints: the last K kept beside last.ckpt (``keep_last``), each a complete
checkpoint that resumes, older ones removed; saves on a wall-clock interval
(``every_n_minutes``) that every rank of a sharded run makes after the same step."""

import pytest

from scaletrain.callbacks.checkpoints import LatestCheckpoint
from scaletrain.checkpoint.contents import checkpoint_step
from tests.helpers import PARITY_STRATEGIES, run_cli

pytestmark = pytest.mark.slow  # training runs as subprocesses

EVERY_5_KEEP_2 = [
    "callbacks.last_checkpoint.every_n_train_steps=5",
    "callbacks.last_checkpoint.keep_last=2",
    "trainer.max_steps=20",
    "trainer.limit_val_batches=2",
    "test=false",
]


def kept(run) -> list[str]:
    return sorted(p.name for p in (run.run_dir / "checkpoints").glob("step-*.ckpt"))


@pytest.mark.parametrize("layout", ["single", "fsdp"])
def test_the_last_k_saves_are_kept_and_each_resumes(tmp_path, layout):
    strategy = PARITY_STRATEGIES["fsdp"] if layout == "fsdp" else []
    run = run_cli("train", tmp_path / "run", *EVERY_5_KEEP_2, *strategy)
    assert run.returncode == 0, run.output
    assert kept(run) == ["step-000015.ckpt", "step-000020.ckpt"]  # steps 5 and 10 removed
    checkpoints = run.run_dir / "checkpoints"
    assert checkpoint_step(checkpoints / "step-000015.ckpt") == 15
    assert checkpoint_step(checkpoints / "step-000020.ckpt") == 20
    assert checkpoint_step(checkpoints / "last.ckpt") == 20
    if layout == "single":  # the newest is last.ckpt itself, not a second copy of it
        assert (checkpoints / "step-000020.ckpt").stat().st_ino == (
            checkpoints / "last.ckpt"
        ).stat().st_ino
    # an older one resumes: five more steps from 15 end at 20
    resumed = run_cli(
        "train",
        tmp_path / "resumed",
        *EVERY_5_KEEP_2,
        *strategy,
        f"ckpt_path={checkpoints / 'step-000015.ckpt'}",
    )
    assert resumed.returncode == 0, resumed.output
    assert resumed.metrics["global_step"] == 20
    assert kept(resumed) == ["step-000020.ckpt"]


def test_saves_by_the_clock_are_made_by_every_rank_after_the_same_step(tmp_path):
    """Every 0.1 s under fsdp on 2 ranks: a save that the ranks did not all make together
    would never complete (each rank writes its shard)."""
    run = run_cli(
        "train",
        tmp_path / "run",
        "callbacks.last_checkpoint.every_n_minutes=0.002",
        "callbacks.last_checkpoint.keep_last=1000",
        "trainer.max_steps=30",
        "trainer.limit_val_batches=0",
        "test=false",
        *PARITY_STRATEGIES["fsdp"],
    )
    assert run.returncode == 0, run.output
    steps = [int(name[5:11]) for name in kept(run)]
    assert len(steps) >= 3, steps  # 30 steps of about 0.1 s: several intervals
    assert steps[-1] == 30
    for step in steps:
        assert checkpoint_step(run.run_dir / "checkpoints" / f"step-{step:06d}.ckpt") == step


@pytest.mark.parametrize(
    "setting, value, expected",
    [
        ("keep_last", 0, "callbacks.last_checkpoint.keep_last=0: must be a positive integer"),
        (
            "every_n_minutes",
            -1.0,
            "callbacks.last_checkpoint.every_n_minutes=-1.0: must be a positive number",
        ),
    ],
)
def test_a_retention_setting_out_of_range_is_one_line(tmp_path, setting, value, expected):
    with pytest.raises(ValueError, match=expected):
        LatestCheckpoint(str(tmp_path), **{setting: value})
    run = run_cli("train", tmp_path / "run", f"callbacks.last_checkpoint.{setting}={value}")
    assert run.returncode == 2
    assert expected in run.stderr.strip().splitlines()[-1]
