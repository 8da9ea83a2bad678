"""Bad input ends with a short, clear message and a non-zero exit, never a traceback."""

import pytest


def assert_short_error(run, *expected: str) -> None:
    assert run.returncode != 0
    assert "Traceback" not in run.output
    assert len(run.output.strip().splitlines()) <= 16, run.output
    for text in expected:
        assert text in run.output, run.output


def test_unknown_group_option_lists_the_valid_ones(train_cli):
    run = train_cli("data=imagenet")
    assert_short_error(run, "data/imagenet", "digits", "mnist", "synthetic")


def test_misspelled_key_is_named(train_cli):
    run = train_cli("model.optimzer.lr=0.1")
    assert_short_error(run, "model.optimzer.lr", "not in struct")


def test_missing_required_value_is_named(eval_cli):
    run = eval_cli()
    assert_short_error(run, "error: ckpt_path is required")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", "error: data.batch_size=0: must be a positive integer"),
        ("model.optimizer.lr=-0.1", "error: model.optimizer.lr=-0.1: must be a positive"),
        ("data.num_classes=7", "error: data.num_classes=7: the digits data has 10; use 10"),
    ],
)
def test_invalid_values_are_one_line_errors(train_cli, override, message):
    assert_short_error(train_cli(override), message)


def test_missing_checkpoint_for_eval(eval_cli, tmp_path):
    run = eval_cli(f"ckpt_path={tmp_path}/missing.ckpt")
    assert_short_error(run, f"error: ckpt_path={tmp_path}/missing.ckpt: no such file")
