"""Gradient aggregation, proven: dL/dw = 1/N * sum_i dL/dw_i.

Each strategy trains on 2 CPU processes with the same seed and global batch as a single
process; the sampler's order does not depend on the world size. After K optimizer steps
the weights and every step's loss must equal single-process training.
"""

import pytest
import torch

from tests.helpers import (
    PARITY_MODELS,
    PARITY_STEPS,
    PARITY_STRATEGIES,
    TOLERANCE,
    final_weights,
    parity_run,
    scalars,
    step_losses,
)

pytestmark = pytest.mark.slow  # starts training runs as subprocesses

# Per-rank model state (parameters, gradients, Adam state) relative to one process.
MEMORY_RATIO = {"ddp": (1.0, 1.0), "fsdp": (0.45, 0.55), "model_sharded": (0.45, 0.6)}


@pytest.fixture(scope="module")
def single_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    return {
        model: parity_run(root, model, *overrides, here=True)
        for model, overrides in PARITY_MODELS.items()
    }


@pytest.mark.parametrize("strategy", list(PARITY_STRATEGIES))
@pytest.mark.parametrize("model", list(PARITY_MODELS))
def test_strategy_matches_single_process_training(single_runs, tmp_path, model, strategy):
    single = single_runs[model]
    distributed = parity_run(tmp_path, "run", *PARITY_MODELS[model], *PARITY_STRATEGIES[strategy])

    losses, reference_losses = step_losses(distributed), step_losses(single)
    assert len(losses) == len(reference_losses) == PARITY_STEPS
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


@pytest.fixture(scope="module")
def single_with_options(tmp_path_factory):
    root = tmp_path_factory.mktemp("options")
    return parity_run(root, "single", *PARITY_MODELS["gpt"], *TRAINING_OPTIONS)


@pytest.mark.parametrize("strategy", ["model_sharded"])  # tensor parallel and FSDP2 both
def test_checkpointing_compile_accumulation_and_clipping_keep_parity(
    single_with_options, tmp_path, strategy
):
    """The Trainer's accumulation and clipping and the net's activation checkpointing and
    compilation act on sharded and tensor-parallel parameters as on whole ones."""
    single = single_with_options
    distributed = parity_run(
        tmp_path,
        "distributed",
        *PARITY_MODELS["gpt"],
        *TRAINING_OPTIONS,
        *PARITY_STRATEGIES[strategy],
    )
    weights, reference_weights = final_weights(distributed), final_weights(single)
    for name, reference in reference_weights.items():
        difference = (weights[name] - reference).abs().max().item()
        assert difference <= TOLERANCE, f"{name}: max difference {difference}"
    assert (
        torch.load(single.run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
        == PARITY_STEPS
    )  # optimizer steps, each over 2 accumulated batches
