"""Pipeline parallelism, proven equal to single-process training: the net's blocks on 2
stages (alone, with 2 data-parallel replicas, with 2-way tensor parallelism: 2 or 4
processes), microbatches scheduled by GPipe or 1F1B, train like one process on the same
global batch; its checkpoints resume under other layouts; eval and consolidate read them.
"""

import pytest

from scaletrain.checkpoint.consolidate import is_sharded_checkpoint
from tests.helpers import (
    PARITY_MODELS,
    PARITY_STEPS,
    TOLERANCE,
    assert_same_training,
    final_weights,
    parity_run,
    run_here,
    scalars,
    step_losses,
)

pytestmark = pytest.mark.slow  # starts training runs as subprocesses

# The MLP with two hidden blocks (and its head): one block per stage.
MODELS = {
    "mlp": [*PARITY_MODELS["mlp"], "model.net.hidden_dims=[64,64]"],
    "gpt": PARITY_MODELS["gpt"],  # two transformer blocks
}
PIPELINE = [
    "strategy=pipeline",
    "strategy.pipeline_parallel_size=2",
    "strategy.microbatches=4",
    "trainer.num_sanity_val_steps=0",
]
LAYOUTS = {
    "pp2": ["trainer.devices=2"],
    "pp2xdp2": ["trainer.devices=4"],
    "pp2xtp2": ["trainer.devices=4", "strategy.tensor_parallel_size=2"],
}


@pytest.fixture(scope="module")
def single_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    return {
        model: parity_run(root, model, *overrides, here=True) for model, overrides in MODELS.items()
    }


# Every layout with both schedules for the GPT; the MLP on 2 stages (its layers are
# split and sharded by the same code as the GPT's blocks; the suite's time on 2 CPU cores
# is the limit).
CASES = [
    *(("gpt", layout, schedule) for layout in LAYOUTS for schedule in ("1f1b", "gpipe")),
    ("mlp", "pp2", "1f1b"),
    ("mlp", "pp2", "gpipe"),
]


@pytest.mark.parametrize(("model", "layout", "schedule"), CASES)
def test_pipeline_matches_single_process_training(single_runs, tmp_path, model, layout, schedule):
    run = parity_run(
        tmp_path,
        "pipeline",
        *MODELS[model],
        *PIPELINE,
        f"strategy.pipeline_schedule={schedule}",
        *LAYOUTS[layout],
    )
    assert_same_training(run, single_runs[model])
    # validation comes from the last stage and reaches TensorBoard and metrics.json as
    # under every other strategy
    metric = "val/acc" if model == "mlp" else "val/ppl"
    (logged,) = scalars(run, metric)
    (expected,) = scalars(single_runs[model], metric)
    assert abs(logged - expected) <= 1e-4
    assert abs(run.metrics["metrics"][metric] - expected) <= 1e-4
    if layout == "pp2":  # each rank holds one stage: about half the model state
        (memory,) = scalars(run, "perf/model_state_bytes")
        (reference,) = scalars(single_runs[model], "perf/model_state_bytes")
        assert 0.3 <= memory / reference <= 0.7


TRAINING_OPTIONS = [
    "model.activation_checkpointing=true",
    "trainer.accumulate_grad_batches=2",
    "trainer.gradient_clip_val=0.05",
]


def test_accumulation_clipping_and_checkpointing_keep_parity(tmp_path):
    """Accumulated batches, a gradient norm clipped over both stages' gradients together,
    recomputed activations: as in one process."""
    gpt = [*MODELS["gpt"], *TRAINING_OPTIONS]
    single = parity_run(tmp_path, "single", *gpt, here=True)
    run = parity_run(tmp_path, "pipeline", *gpt, *PIPELINE, *LAYOUTS["pp2"])
    assert_same_training(run, single)


HALF = PARITY_STEPS // 2


@pytest.fixture(scope="module")
def halfway(tmp_path_factory):
    """A pipeline run and a single process, each stopped after half the parity steps."""
    root = tmp_path_factory.mktemp("halfway")
    stop = f"trainer.max_steps={HALF}"
    pipeline = parity_run(root, "pipeline", *MODELS["gpt"], *PIPELINE, *LAYOUTS["pp2"], stop)
    single = parity_run(root, "single", *MODELS["gpt"], stop, here=True)
    return root, pipeline, single


@pytest.mark.parametrize(
    ("writer", "resume"),
    [
        ("pipeline", []),  # 2 stages -> one process (consolidated, as ddp reads it too)
        ("pipeline", [*PIPELINE, *LAYOUTS["pp2"]]),  # in place, as after a stop
        ("single", [*PIPELINE, *LAYOUTS["pp2"]]),  # one process -> 2 stages
    ],
    ids=["pp2-to-single", "pp2-to-pp2", "single-to-pp2"],
)
def test_a_checkpoint_resumes_under_another_layout(single_runs, halfway, writer, resume, request):
    root, pipeline, single = halfway
    written = {"pipeline": pipeline, "single": single}[writer]
    last = written.run_dir / "checkpoints" / "last.ckpt"
    if writer == "pipeline":  # one shard set per stage, under their own parameter names
        assert is_sharded_checkpoint(last)
    resumed = parity_run(
        root, request.node.callspec.id, *MODELS["gpt"], f"ckpt_path={last}", *resume,
        here=not resume,
    )  # fmt: skip
    straight = single_runs["gpt"]
    weights, reference = final_weights(resumed), final_weights(straight)
    for name, expected in reference.items():
        assert (weights[name] - expected).abs().max().item() <= TOLERANCE, name
    losses, reference_losses = step_losses(resumed), step_losses(straight)[HALF:]
    assert losses == pytest.approx(reference_losses, abs=TOLERANCE)


def test_eval_reads_a_pipeline_checkpoint(halfway):
    """In one process, with the model and data of the training run (from its directory)."""
    root, pipeline, single = halfway
    losses = []
    for name, run in (("eval", pipeline), ("eval_single", single)):
        last = run.run_dir / "checkpoints" / "last.ckpt"
        evaluation = run_here(
            "eval", root / name, f"paths.root_dir={root}", f"ckpt_path={last}",
            "trainer.limit_test_batches=2",
        )  # fmt: skip
        assert evaluation.returncode == 0
        losses.append(evaluation.metrics["metrics"]["test/loss"])
    assert abs(losses[0] - losses[1]) <= TOLERANCE


# -- several stages per rank: the interleaved and V-shaped schedules ------------------------

GPT4 = [*MODELS["gpt"], "model.net.num_layers=4"]  # 4 blocks: 2 stages on each of 2 ranks
SEVERAL = ("interleaved_1f1b", "interleaved_zero_bubble", "zbv_zero_bubble")


@pytest.fixture(scope="module")
def single_gpt4(tmp_path_factory):
    return parity_run(tmp_path_factory.mktemp("single4"), "single", *GPT4, here=True)


@pytest.mark.parametrize(
    ("schedule", "layout"),
    [
        *((schedule, "pp2") for schedule in SEVERAL),
        ("interleaved_1f1b", "pp2xdp2"),  # each stage sharded by FSDP2 over 2 ranks
        ("zbv_zero_bubble", "pp2xtp2"),
    ],
)
def test_several_stages_per_rank_train_like_one_process(single_gpt4, tmp_path, schedule, layout):
    run = parity_run(
        tmp_path, "pipeline", *GPT4, *PIPELINE, *LAYOUTS[layout],
        f"strategy.pipeline_schedule={schedule}",
    )  # fmt: skip
    assert_same_training(run, single_gpt4)
    # each rank holds two stages that are not neighbours (looped) or, in a V, the first
    # rank holds the first and the last
    ranks = "0, 1, 0, 1" if schedule != "zbv_zero_bubble" else "0, 1, 1, 0"
    summary = (run.run_dir / "train.log").read_text()
    held = [summary.split(f"pipeline stage {stage} (rank ")[1][0] for stage in range(4)]
    assert ", ".join(held) == ranks


@pytest.fixture(scope="module")
def interleaved_halfway(tmp_path_factory):
    """An interleaved_1f1b run (4 stages on 2 ranks) stopped after half the parity steps."""
    interleaved = [*PIPELINE, *LAYOUTS["pp2"], "strategy.pipeline_schedule=interleaved_1f1b"]
    root = tmp_path_factory.mktemp("interleaved")
    return parity_run(root, "half", *GPT4, *interleaved, f"trainer.max_steps={HALF}")


@pytest.mark.parametrize(
    "resume",
    [[], [*PIPELINE, *LAYOUTS["pp2"]]],
    ids=["interleaved-to-single", "interleaved-to-1f1b"],
)
def test_a_checkpoint_of_several_stages_per_rank_resumes_under_another_layout(
    single_gpt4, interleaved_halfway, tmp_path, resume
):
    last = interleaved_halfway.run_dir / "checkpoints" / "last.ckpt"
    resumed = parity_run(tmp_path, "resumed", *GPT4, f"ckpt_path={last}", *resume, here=not resume)
    weights, reference = final_weights(resumed), final_weights(single_gpt4)
    for name, expected in reference.items():
        assert (weights[name] - expected).abs().max().item() <= TOLERANCE, name
    losses, reference_losses = step_losses(resumed), step_losses(single_gpt4)[HALF:]
    assert losses == pytest.approx(reference_losses, abs=TOLERANCE)
