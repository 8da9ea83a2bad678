"""The override check judges keys against the config the chosen groups compose, and
reads Hydra's override grammar: lists of options, sweeps, list indices, null values."""

from pathlib import Path

import pytest

from scaletrain.cli.overrides import override_problems
from scaletrain.config import CONFIG_DIR


def problems(*args: str, config: str = "train") -> list[str]:
    return override_problems(Path(CONFIG_DIR), config, list(args))


@pytest.mark.parametrize(
    "args",
    [
        ["model=gpt", "data=text", "model.net.num_heads=4"],  # a key of the chosen group
        ["callbacks=[default,early_stopping]", "callbacks.early_stopping.patience=3"],
        ["-m", "model.optimizer.lr=1e-3,3e-3", "data=digits,synthetic"],
        ["experiment=seed_mnist", "model.net.hidden_dims.0=32", "model.scheduler=null"],
        ["+extra=1", "++tags=[a]", "~logger", "hydra.job.chdir=true", "hydra/launcher=slurm"],
        ["--cfg", "job", "made.up=1"],  # Hydra's own flags: left to Hydra
        ["++trainer.extra=1", "trainer.extra=2", "+more={a:1}", "more.a=2"],  # added keys
        ["-m", "hparams_search=digits_optuna", "model.optimizer.lr=interval(1e-4,1e-2)"],
    ],
)
def test_valid_overrides_pass(args):
    assert problems(*args) == []


def test_eval_keys_are_judged_against_the_eval_config():
    assert problems("ckpt_path=x.ckpt", config="eval") == []  # a required (???) value
    assert problems("ckpt_pth=x.ckpt", config="eval") == [
        "ckpt_pth: unknown setting; did you mean ckpt_path?"
    ]


def test_a_key_of_a_group_that_was_not_chosen_is_unknown():
    (problem,) = problems("model.net.num_heads=4")  # the MLP has no heads
    assert problem.startswith("model.net.num_heads: unknown setting")


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        (
            "data=digits,mnst",
            "data=mnst: no such option; valid: digits, mnist, synthetic, text, tokens",
        ),
        ("callbacks=[default,early]", "callbacks=early: no such option; valid: default, "),
        (
            "experiment=null",
            "experiment=null: no such option; valid: gpt_bpe, gpt_text, hf_finetune, seed_mnist",
        ),
        ("dat=mnist", "dat: unknown setting; did you mean data?"),
        ("model.net.hidden_dims.3=8", "model.net.hidden_dims.3: model.net.hidden_dims is a list "),
        ("model.scheduler.T_max=3", "model.scheduler.T_max: model.scheduler is a single value"),
        ("zzz=1", "zzz: unknown setting; valid at the top level: callbacks, ckpt_path, data,"),
    ],
)
def test_each_kind_of_mistake_is_named(arg, expected):
    (problem,) = problems(arg)
    assert problem.startswith(expected), problem


def test_options_from_an_extra_config_directory_pass(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text("# @package _global_\nmodel:\n  x: 1\n")
    assert problems(f"hydra.searchpath=[file://{tmp_path}]", "model=mine", "model.x=2") == []
