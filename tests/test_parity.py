"""Gradient aggregation, proven: dL/dw = 1/N * sum_i dL/dw_i.

Each strategy trains on 2 CPU processes with the same seed and global batch as a single
process; the sampler's order does not depend on the world size. After K optimizer steps
the weights and every step's loss must equal single-process training.
"""

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from scaletrain.consolidate import consolidate, is_sharded_checkpoint
from scaletrain.utils.tensorboard import event_dir
from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # starts training runs as subprocesses

STEPS = 6
TOLERANCE = 1e-5
COMMON = [
    f"trainer.max_steps={STEPS}",
    f"trainer.val_check_interval={STEPS}",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "test=false",
]
MODELS = {
    "mlp": ["data.batch_size=32"],
    "gpt": [
        "experiment=gpt_text",
        "data.max_bytes=200000",
        "data.context_length=32",
        "data.batch_size=8",
        "model.net.dim=32",
        "model.net.num_layers=2",
    ],
}
STRATEGIES = {
    "ddp": ["strategy=ddp", "trainer.devices=2"],
    "fsdp": ["strategy=fsdp", "trainer.devices=2"],
    "model_sharded": [
        "strategy=model_sharded",
        "strategy.tensor_parallel_size=2",
        "trainer.devices=2",
    ],
}


def train_run(root, name, *overrides):
    run = run_cli("train", root / name, f"paths.root_dir={root}", *COMMON, *overrides)
    assert run.returncode == 0, run.output
    return run


def final_weights(run) -> dict[str, torch.Tensor]:
    last = run.run_dir / "checkpoints" / "last.ckpt"
    if is_sharded_checkpoint(last):
        last = consolidate(last, run.run_dir / "full.ckpt")
    return torch.load(last, weights_only=False)["state_dict"]


def scalars(run, tag: str) -> list[float]:
    events = EventAccumulator(str(event_dir(run.run_dir)))
    events.Reload()
    return [event.value for event in events.Scalars(tag)]


def step_losses(run) -> list[float]:
    return scalars(run, "train/loss")


# Per-rank model state (parameters, gradients, Adam state) relative to one process.
MEMORY_RATIO = {"ddp": (1.0, 1.0), "fsdp": (0.45, 0.55), "model_sharded": (0.45, 0.6)}


@pytest.fixture(scope="module")
def single_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    return {model: train_run(root, model, *overrides) for model, overrides in MODELS.items()}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("model", list(MODELS))
def test_strategy_matches_single_process_training(single_runs, tmp_path, model, strategy):
    single = single_runs[model]
    distributed = train_run(tmp_path, "run", *MODELS[model], *STRATEGIES[strategy])

    losses, reference_losses = step_losses(distributed), step_losses(single)
    assert len(losses) == len(reference_losses) == STEPS
    for step, (loss, reference) in enumerate(zip(losses, reference_losses, strict=True)):
        assert abs(loss - reference) <= TOLERANCE, f"step {step}: {loss} vs {reference}"

    weights, reference_weights = final_weights(distributed), final_weights(single)
    assert weights.keys() == reference_weights.keys()
    for name, reference in reference_weights.items():
        difference = (weights[name] - reference).abs().max().item()
        assert difference <= TOLERANCE, f"{name}: max difference {difference}"
    # Training moved the loss far more than the tolerance: the comparison is not vacuous.
    assert abs(reference_losses[0] - reference_losses[-1]) > 1000 * TOLERANCE

    (memory,) = scalars(distributed, "perf/model_state_bytes")
    (reference_memory,) = scalars(single, "perf/model_state_bytes")
    low, high = MEMORY_RATIO[strategy]
    assert low <= memory / reference_memory <= high


TRAINING_OPTIONS = [
    "model.activation_checkpointing=true",
    "model.compile=true",
    "trainer.accumulate_grad_batches=2",
    "trainer.gradient_clip_val=0.05",
]


@pytest.mark.parametrize("strategy", ["fsdp", "model_sharded"])
def test_checkpointing_compile_accumulation_and_clipping_keep_parity(tmp_path, strategy):
    """The Trainer's accumulation and clipping and the net's activation checkpointing and
    compilation act on sharded and tensor-parallel parameters as on whole ones."""
    single = train_run(tmp_path, "single", *MODELS["gpt"], *TRAINING_OPTIONS)
    distributed = train_run(
        tmp_path, "distributed", *MODELS["gpt"], *TRAINING_OPTIONS, *STRATEGIES[strategy]
    )
    weights, reference_weights = final_weights(distributed), final_weights(single)
    for name, reference in reference_weights.items():
        difference = (weights[name] - reference).abs().max().item()
        assert difference <= TOLERANCE, f"{name}: max difference {difference}"
    assert (
        torch.load(single.run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
        == STEPS
    )  # optimizer steps, each over 2 accumulated batches
