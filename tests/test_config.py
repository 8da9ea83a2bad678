"""Every option of every config group composes, validates, and builds its objects."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from scaletrain.config import CONFIG_DIR
from scaletrain.config.build import instantiate_group
from scaletrain.config.preflight import validate
from tests.helpers import compose_train

GROUPS = ["data", "model", "strategy", "trainer", "callbacks", "logger", "debug", "experiment"]


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def linear_shapes(net) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in net.modules() if hasattr(m, "in_features")]


# What some options need beside them: the model a data option goes with (and the other
# way round), the data it reads, and enough devices for the default tensor-parallel size of 2.
PARTNER = {
    "data=text": ["model=gpt"],
    "model=gpt": ["data=text"],
    "model=hf_causal_lm": ["data=text"],
    # token data the run would prepare (nothing is prepared by composing and validating)
    "data=tokens": [
        "model=gpt",
        "data.dir=/nonexistent/tokens",
        "data.prepare={sources:stdlib,tokenizer:bytes,vocab_size:256}",
        "data.vocab_size=256",
    ],
    "strategy=model_sharded": ["trainer.devices=2"],
    "strategy=pipeline": ["trainer.devices=2", "model.net.hidden_dims=[64,64]"],  # 2 stages
}


@pytest.mark.parametrize(
    "override", [f"{group}={option}" for group in GROUPS for option in options(group)]
)
def test_every_group_option_composes_and_validates(override, request):
    partner = PARTNER.get(override, [])
    if override == "experiment=hf_finetune":  # the checkpoint and corpus it names
        partner = [f"paths.data_dir={request.getfixturevalue('hf_data_dir')}"]
    cfg = compose_train(override, *partner)
    problems = validate(cfg)
    if override == "trainer=gpu" and not torch.cuda.is_available():
        # Lightning's own objection, naming the device settings
        (problem,) = problems
        assert problem.startswith("trainer (accelerator=gpu, devices=1, num_nodes=1, precision=")
        assert "But your machine only has: []" in problem
    else:
        assert problems == []
    instantiate(cfg.data)
    instantiate(cfg.model)
    instantiate_group(cfg.get("callbacks"))


def test_default_config_is_the_seed_mlp_on_digits():
    cfg = compose_train()
    model = instantiate(cfg.model)
    layers = [
        (m.in_features, m.out_features) for m in model.net.modules() if hasattr(m, "in_features")
    ]
    assert layers == [(64, 64), (64, 10)]
    assert cfg.model.optimizer._target_ == "torch.optim.Adam"
    assert cfg.model.optimizer.lr == 1e-3


def test_seed_mnist_experiment_is_the_seed_example():
    cfg = compose_train("experiment=seed_mnist")
    model = instantiate(cfg.model)
    layers = [
        (m.in_features, m.out_features) for m in model.net.modules() if hasattr(m, "in_features")
    ]
    assert layers == [(784, 64), (64, 10)]
    assert cfg.trainer.max_epochs == 10
    assert cfg.data._target_.endswith("MNISTDataModule")


def test_optimizer_is_partial_and_overridable():
    cfg = compose_train("model.optimizer.lr=3e-3", "model.optimizer._target_=torch.optim.SGD")
    model = instantiate(cfg.model)
    optimizer = model.configure_optimizers()
    assert type(optimizer).__name__ == "SGD"
    assert optimizer.param_groups[0]["lr"] == pytest.approx(3e-3)


def test_scheduler_from_config_steps_every_step():
    cfg = compose_train(
        "model.scheduler={_target_: torch.optim.lr_scheduler.StepLR, _partial_: true, step_size: 1}"
    )
    configured = instantiate(cfg.model).configure_optimizers()
    assert type(configured["lr_scheduler"]["scheduler"]).__name__ == "StepLR"
    assert configured["lr_scheduler"]["interval"] == "step"


def test_validate_reports_every_problem_at_once():
    cfg = compose_train("data.batch_size=0", "model.optimizer.lr=-1", "trainer.max_epochs=-5")
    problems = validate(cfg)
    assert len(problems) == 3
    assert problems[0].startswith("data.batch_size=0")
    assert problems[1].startswith("model.optimizer.lr=-1")
    assert problems[2].startswith("trainer.max_epochs=-5")


def test_model_and_data_that_do_not_fit_are_one_line():
    (problem,) = validate(compose_train("data=text"))
    assert problem.startswith("model.net.input_dim: refers to a setting that does not exist")
    assert "model=gpt or hf_causal_lm with data=text" in problem
