"""Typed settings: every value is checked against the annotation of the code that takes
it, and against the range that code can work with, before any process starts; the
resume command line keeps the run's own settings."""

from pathlib import Path

import pytest
from hydra.utils import instantiate

from scaletrain.cli.resume import merge
from scaletrain.config.build import build_trainer
from scaletrain.config.preflight import validate
from scaletrain.config.settings import describe, fits
from scaletrain.errors import ConfigError
from tests.helpers import compose_train


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ("trainer.max_epochs=abc", "trainer.max_epochs=abc: must be an integer or null"),
        ("trainer.max_steps=1.5", "trainer.max_steps=1.5: must be an integer"),
        ("model.net.hidden_dims=[a]", "model.net.hidden_dims=[a]: must be a list of integers"),
        ("model.optimizer.lr=x", "model.optimizer.lr=x: must be a number"),
        (
            "trainer.deterministic=maybe",
            "trainer.deterministic=maybe: must be true, false, warn or null",
        ),
        ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0: must be a positive integer"),
        (
            "trainer.val_check_interval=0",
            "trainer.val_check_interval=0: must be a fraction of an epoch in (0, 1] or a "
            "number of batches >= 1",
        ),
        (
            "trainer.limit_val_batches=1.5",
            "trainer.limit_val_batches=1.5: must be a fraction in [0, 1] or a count >= 0",
        ),
        ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1: must be >= 0"),
        ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0: must be a"),
        ("seed=abc", "seed=abc: must be an integer"),
        ("data.val_fraction=1.5", "data.val_fraction=1.5: must be a fraction in [0, 1)"),
        (
            "monitor.metric=val/accuracy",
            "monitor.metric=val/accuracy: Classifier never logs it; valid: train/loss, val/loss",
        ),
        (
            "callbacks.model_checkpoint.monitor=val/ppl",
            "callbacks.model_checkpoint.monitor=val/ppl: Classifier never logs it",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting_and_what_is_valid(override, problem):
    problems = validate(compose_train(override))
    assert len(problems) == 1, problems
    assert problems[0].startswith(problem)


def test_a_gpt_setting_of_the_wrong_type_is_named_once():
    problems = validate(compose_train("experiment=gpt_text", "data.context_length=null"))
    assert problems == ["data.context_length=null: must be an integer"]


def test_lightnings_own_objections_become_one_line():
    cfg = compose_train("+trainer.gradient_clip_algorithm=foo", "logger=none")
    with pytest.raises(ConfigError, match=r"^trainer: `gradient_clip_algorithm` foo is invalid"):
        build_trainer(cfg, instantiate(cfg.model))


@pytest.mark.parametrize(
    ("value", "hint", "expected"),
    [
        (3, int | None, True),
        (True, int, False),  # a boolean is not a count
        (3, float, True),
        ("a", float | None, False),
        ([1, 2], tuple[float, float], True),
        ([1], tuple[float, float], False),
        ("/some/path", Path, True),  # not judged: no config value is a Path
    ],
)
def test_values_fit_annotations(value, hint, expected):
    assert fits(value, hint) is expected


def test_descriptions_read_as_words():
    assert describe(int | float | None) == "a number or null"
    assert describe(list[int]) == "a list of integers"


def test_a_resume_keeps_the_runs_settings_and_lets_new_ones_win():
    recorded = ["experiment=gpt_text", "trainer.max_epochs=2", "+x.y=1", "ckpt_path=last"]
    given = ["trainer.max_epochs=3", "x.y=2", "seed=7"]
    assert merge(recorded, given) == [
        "experiment=gpt_text",
        "trainer.max_epochs=3",
        "++x.y=2",  # the run added x.y: it is still added
        "seed=7",
    ]


def test_a_group_mismatch_does_not_hide_the_other_problems():
    # the default model (mlp) with text data: its input size refers to a missing setting
    problems = validate(compose_train("data=text", "data.paths=[/no/such.txt]", "seed=x"))
    assert problems[0].startswith("model.net.input_dim: refers to a setting that does not exist")
    assert "data.paths: no such file(s): /no/such.txt" in problems
    assert "seed=x: must be an integer" in problems


def test_any_lightning_trainer_argument_can_be_set_as_trainer_key():
    from scaletrain.cli.overrides import check_command_line

    args = check_command_line(
        "train", ["trainer.num_sanity_val_steps=0", "trainer.max_epochs=2", "+trainer.x=1"]
    )
    assert args == ["++trainer.num_sanity_val_steps=0", "trainer.max_epochs=2", "+trainer.x=1"]
    cfg = compose_train(*args[:2])
    assert cfg.trainer.num_sanity_val_steps == 0
    assert validate(compose_train("++trainer.num_sanity_val_steps=-2")) == [
        "trainer.num_sanity_val_steps=-2: must be >= 0 (or -1 for every batch)"
    ]
