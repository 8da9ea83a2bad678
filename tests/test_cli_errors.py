"""Bad input ends with a short, clear message and a non-zero exit, never a traceback."""

import pytest

pytestmark = pytest.mark.slow  # starts training runs as subprocesses


def assert_short_error(run, *expected: str) -> None:
    assert run.returncode != 0
    assert "Traceback" not in run.output
    assert len(run.output.strip().splitlines()) <= 16, run.output
    for text in expected:
        assert text in run.output, run.output


def test_every_bad_override_is_reported_at_once_one_line_each(train_cli):
    run = train_cli(
        "data=imagenet",
        "trainer.max_step=3",
        "model.optimzer.lr=0.1",
        "strategy=fsdp",
        "strategy.sharding=2",
    )
    assert run.returncode == 2
    assert run.output.strip().splitlines() == [
        "error: data=imagenet: no such option; valid: digits, mnist, synthetic, text, tokens",
        "error: trainer.max_step: unknown setting; did you mean trainer.max_steps?",
        "error: model.optimzer.lr: unknown setting; did you mean model.optimizer.lr?",
        "error: strategy.sharding: unknown setting; valid under strategy: cpu_offload, "
        "distributed_checkpoint, mixed_precision, name, reshard_after_forward, "
        "tensor_parallel_size",
    ]


def test_missing_required_value_is_named(eval_cli):
    run = eval_cli()
    assert_short_error(run, "error: ckpt_path is required")


def test_invalid_values_are_one_line_errors(train_cli):
    run = train_cli("data.batch_size=0", "model.optimizer.lr=-0.1")
    assert_short_error(
        run,
        "error: data.batch_size=0: must be a positive integer",
        "error: model.optimizer.lr=-0.1: must be a positive",
    )


def test_a_data_module_refusing_a_setting_is_a_one_line_error(train_cli):
    run = train_cli("data.num_classes=7")
    assert_short_error(run, "error: data.num_classes=7: the digits data has 10; use 10")


def test_missing_checkpoint_for_eval(eval_cli, tmp_path):
    run = eval_cli(f"ckpt_path={tmp_path}/missing.ckpt")
    assert_short_error(run, f"error: ckpt_path={tmp_path}/missing.ckpt: no such file")
