"""A user's own net trains under every strategy it can support, declared as data
(``model.parallel``) and never by class: a plain nn.Module written without scaletrain in
mind (tests/user_nets.py), the shipped conv net, and a Hugging Face Llama. Each equals
single-process training; what a net lacks for a strategy is a one-line error first."""

import subprocess
import sys

import pytest
import torch

from scaletrain.config.build import build_model
from scaletrain.config.preflight import validate
from scaletrain.nets.hf import MISSING
from tests.helpers import (
    CLI_ENV,
    PARITY_STRATEGIES,
    assert_same_training,
    compose_train,
    parity_run,
    run_cli,
)

# The user's net in place of the MLP: its own target, the MLP's keys and plan removed.
USER_NET = [
    "model.net._target_=tests.user_nets.LayerStack",
    "~model.net.input_dim",
    "~model.net.hidden_dims",
    "~model.net.num_classes",
    "~model.parallel",
]
# Its plan for the strategies that split it, as a user writes it in the model's YAML.
USER_PLAN = [
    "+model.parallel.tensor_parallel={layers.0: colwise, layers.2: rowwise}",
    "+model.parallel.pipeline.last=[scale]",
]
PIPELINE = [
    "strategy=pipeline",
    "trainer.devices=2",
    "strategy.microbatches=4",
    "trainer.num_sanity_val_steps=0",
]
HF = [
    "data=text",
    "model=hf_causal_lm",
    "data.max_bytes=200000",
    "data.context_length=32",
    "data.batch_size=8",
    "model.net.config.hidden_size=32",
    "model.net.config.intermediate_size=64",
    "model.net.config.num_hidden_layers=2",
]
LAYOUTS = {
    **PARITY_STRATEGIES,
    "pipeline": PIPELINE,
}


def saved_initial_weights(tmp_path, name: str, *overrides: str) -> dict[str, torch.Tensor]:
    """The full initial weights of a run of ``overrides`` (one step), from every rank."""
    saved = tmp_path / f"{name}.pt"
    callback = f"{{_target_: tests.initial_weights.SaveInitialWeights, path: {saved}}}"
    run = run_cli(
        "train",
        tmp_path / name,
        *overrides,
        "trainer.max_steps=1",
        "trainer.limit_val_batches=0",
        "test=false",
        f"+callbacks.initial_weights={callback}",
    )
    assert run.returncode == 0, run.output
    weights: dict[str, torch.Tensor] = {}
    for rank_file in tmp_path.glob(f"{name}.pt.rank*"):
        weights.update(torch.load(rank_file, weights_only=True))
    return weights


# -- what a net lacks is one line before anything starts -----------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            # the net swapped, the MLP's plan kept
            [o for o in USER_NET if o != "~model.parallel"],
            "model.parallel.blocks=blocks: LayerStack has no ModuleList or Sequential of that "
            "name; valid: layers (or leave it out to have it found)",
        ),
        (
            [*USER_NET[:1], *USER_NET[2:]],  # the MLP's keys kept
            "model.net: tests.user_nets.LayerStack could not be built: LayerStack.__init__() got "
            "an unexpected keyword argument 'input_dim'",
        ),
        (
            [
                *USER_NET,
                "+model.parallel.tensor_parallel={layers.*.q: colwise}",
                *PARITY_STRATEGIES["model_sharded"],
            ],
            'model.parallel.tensor_parallel."layers.*.q": matches no module of LayerStack',
        ),
        (
            [*USER_NET, "+model.parallel.tensor_parallel={layers: colwise}"],
            'model.parallel.tensor_parallel."layers": matches only modules that hold no '
            "parameters of their own (layers, ...); name the layers inside them",
        ),
        (
            [*USER_NET, *USER_PLAN, "+model.net.width=127", *PARITY_STRATEGIES["model_sharded"]],
            [
                "strategy.tensor_parallel_size=2 does not divide layers.0's output size 127, "
                "which colwise splits; valid: 1, 127",
                "strategy.tensor_parallel_size=2 does not divide layers.2's input size 127, "
                "which rowwise splits; valid: 1, 127",
            ],
        ),
        (
            [*USER_NET, "+model.parallel.tensor_parallel={layers.0: diagonal}"],
            'model.parallel.tensor_parallel."layers.0"=diagonal: unknown style; valid: colwise, '
            "colwise_gather, rowwise, embedding, replicate",
        ),
        (
            [*USER_NET, *PIPELINE[:2]],
            "strategy=pipeline: LayerStack's scale is in no stage; add it to "
            "model.parallel.pipeline.first (before the blocks) or .last (after them)",
        ),
        (
            [
                *USER_NET,
                "model.net._target_=torch.nn.Linear",
                "+model.net.in_features=64",
                "+model.net.out_features=10",
                *PIPELINE[:2],
            ],
            "strategy=pipeline: Linear has no repeated blocks (a ModuleList or Sequential of "
            "like modules); name them with model.parallel.blocks=<path>",
        ),
        (
            ["model=cnn", "strategy=pipeline", "trainer.devices=4"],
            None,  # two blocks, two stages: fits
        ),
        (
            ["model=cnn", *PIPELINE[:1], "trainer.devices=3", "strategy.pipeline_parallel_size=3"],
            "strategy.pipeline_parallel_size=3: more stages than the net's 2 blocks "
            "(model.parallel.blocks=blocks); valid: 1 to 2",
        ),
        (
            [
                *HF,
                *PARITY_STRATEGIES["model_sharded"],
                "strategy.tensor_parallel_size=2",
                "model.net.config.num_key_value_heads=1",
            ],
            "strategy.tensor_parallel_size=2 does not divide "
            "model.net.config.num_key_value_heads=1; valid: 1",
        ),
    ],
)
def test_what_a_net_lacks_for_its_strategy_is_one_line(overrides, expected):
    lines = [expected] if isinstance(expected, str) else expected or []
    assert validate(compose_train(*overrides)) == lines


def test_without_transformers_the_hugging_face_model_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if missing
    assert validate(compose_train(*HF)) == [MISSING]


def test_a_plain_net_is_found_its_blocks_and_planned_by_patterns():
    model = build_model(compose_train(*USER_NET, *USER_PLAN))
    plan = model.net_plan
    assert (plan.blocks, plan.blocks_found, plan.last) == ("layers", True, ("scale",))
    assert plan.tensor_parallel_styles(model.net) == {
        "layers.0": "colwise",
        "layers.2": "rowwise",
        "layers.4": "replicate",  # whatever the patterns leave holds whole on every rank
        "scale": "replicate",
    }


def test_the_hugging_face_model_brings_its_own_plans():
    plan = build_model(compose_train(*HF)).net_plan
    assert plan.blocks == "hf.model.layers"
    assert (plan.first, plan.last) == (("hf.model.embed_tokens",), ("hf.model.norm", "hf.lm_head"))
    assert plan.tensor_parallel["hf.model.layers.*.self_attn.q_proj"] == "colwise"
    assert plan.tensor_parallel["hf.model.layers.*.mlp.down_proj"] == "rowwise"
    assert plan.tensor_parallel["hf.lm_head"] == "colwise_gather"
    assert plan.tensor_parallel["hf.model.embed_tokens"] == "embedding"


# -- and trains like one process -----------------------------------------------------------

CASES = [
    ("user", "ddp"),
    ("user", "fsdp"),
    ("user", "model_sharded"),
    ("user", "pipeline"),
    ("cnn", "pipeline"),  # code between the blocks and the head: pooling, flattening
    *(("hf", layout) for layout in LAYOUTS),
]
NETS = {"user": [*USER_NET, *USER_PLAN, "data.batch_size=32"], "cnn": ["model=cnn"], "hf": HF}


@pytest.fixture(scope="module")
def single_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    return {net: parity_run(root, net, *overrides) for net, overrides in NETS.items()}


@pytest.mark.slow
@pytest.mark.parametrize(("net", "layout"), CASES)
def test_a_users_net_trains_like_one_process(single_runs, tmp_path, net, layout):
    run = parity_run(tmp_path, layout, *NETS[net], *LAYOUTS[layout])
    assert_same_training(run, single_runs[net])


@pytest.mark.slow
def test_a_plain_net_starts_from_the_single_process_weights_when_sharded(tmp_path):
    """No model.parallel and no method: standard layers draw PyTorch's default rule block
    by block, the user's own module is reset by its reset_parameters."""
    single = saved_initial_weights(tmp_path, "single", *USER_NET)
    sharded = saved_initial_weights(tmp_path, "fsdp", *USER_NET, *PARITY_STRATEGIES["fsdp"])
    assert sharded.keys() == single.keys()
    for name, tensor in single.items():
        assert torch.equal(sharded[name], tensor), name
    assert single["scale.weight"].min() >= 0.5 and single["scale.weight"].max() <= 1.5


@pytest.mark.slow
def test_a_parameter_only_its_constructor_sets_is_built_whole_and_said_once(tmp_path):
    gained = [*USER_NET, "model.net._target_=tests.user_nets.GainedStack"]
    single = saved_initial_weights(tmp_path, "single", *gained)
    sharded = saved_initial_weights(tmp_path, "fsdp", *gained, *PARITY_STRATEGIES["fsdp"])
    for name, tensor in single.items():
        assert torch.equal(sharded[name], tensor), name
    output = (tmp_path / "fsdp" / "train.log").read_text()
    assert output.count("GainedStack is built whole on every rank") == 1


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["single", "ddp", "fsdp"])
def test_the_conv_net_learns_the_digits(tmp_path, layout):
    strategy = PARITY_STRATEGIES.get(layout, [])
    run = run_cli("train", tmp_path / layout, "model=cnn", "trainer.max_epochs=6", *strategy)
    assert run.returncode == 0, run.output
    assert run.metrics["metrics"]["test/acc"] >= 0.95


@pytest.mark.slow
def test_the_hugging_face_model_generates(single_runs):
    command = ["-m", "scaletrain.generate", f"ckpt_path={single_runs['hf'].run_dir}"]
    run = subprocess.run(
        [sys.executable, *command, 'prompt="def "', "max_new_tokens=20", "seed=0"],
        env=CLI_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    # 20 bytes after the prompt: a model trained 6 steps writes no Python yet
    assert run.stdout.encode().startswith(b"def ") and len(run.stdout.encode()) > 20


@pytest.mark.slow
def test_a_net_whose_forward_steps_between_blocks_is_refused_by_the_pipeline(tmp_path):
    run = run_cli(
        "train",
        tmp_path / "run",
        *USER_NET,
        "model.net._target_=tests.user_nets.OuterResidual",
        "+model.parallel.pipeline={first: [embed], last: [head]}",
        *PIPELINE,
        "trainer.max_steps=1",
    )
    assert run.returncode != 0
    assert "OuterResidual.forward does not pass each block's output straight to the next" in (
        run.output
    )
