"""Distributed settings that cannot work are one-line errors before any worker starts."""

import pytest
import torch

from scaletrain.config.preflight import validate
from tests.helpers import compose_train

GPT = ["experiment=gpt_text"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            [
                *GPT,
                "strategy=model_sharded",
                "trainer.devices=2",
                "model.net.num_heads=3",
                "model.net.dim=96",
            ],
            "strategy.tensor_parallel_size=2 does not divide model.net.num_heads=3; valid: 1, 3",
        ),
        (
            ["strategy=model_sharded", "trainer.devices=2", "model.net.hidden_dims=[63]"],
            "strategy.tensor_parallel_size=2 does not divide blocks.0.0's output size 63, "
            "which colwise_gather splits; valid: 1, 3, 7, 9, 21, 63",
        ),
        (
            ["strategy=model_sharded", "trainer.devices=2", "strategy.tensor_parallel_size=3"],
            "strategy.tensor_parallel_size=3: must divide the world size 2 (trainer.devices x "
            "trainer.num_nodes); valid: 1, 2",
        ),
        (
            ["strategy=ddp", "trainer.devices=2", "data.batch_size=33"],
            "data.batch_size=33: the global batch must divide by the data-parallel size 2",
        ),
        (
            [
                "strategy=model_sharded",
                "trainer.devices=4",
                "data.batch_size=6",
                "strategy.tensor_parallel_size=4",
            ],
            None,  # data-parallel size 1: any batch divides
        ),
        (
            ["trainer.devices=2"],
            "trainer.devices=2: strategy=auto runs one process; use strategy=ddp, fsdp, "
            "model_sharded or pipeline for 2 processes",
        ),
        (
            ["strategy=ddp", "+strategy.tensor_parallel_size=2", "trainer.devices=2"],
            "strategy.tensor_parallel_size=2: only model_sharded and pipeline split the layers",
        ),
        (
            ["strategy=fsdp", "+strategy.pipeline_parallel_size=2", "trainer.devices=2"],
            "strategy.pipeline_parallel_size=2: only strategy=pipeline splits the net into "
            "stages; use it or 1",
        ),
        (
            [*GPT, "strategy=pipeline", "trainer.devices=2", "strategy.microbatches=1"],
            "strategy.microbatches=1: 1f1b needs at least one microbatch per stage (2); "
            "valid: 2 or more, or strategy.pipeline_schedule=gpipe",
        ),
        (
            [*GPT, "strategy=pipeline", "trainer.devices=2", "strategy.pipeline_schedule=zigzag"],
            "strategy.pipeline_schedule=zigzag: unknown; valid: gpipe, 1f1b, interleaved_1f1b, "
            "interleaved_zero_bubble, zbv_zero_bubble",
        ),
        (
            [*GPT, "strategy=pipeline", "trainer.devices=2", "strategy.stages_per_rank=2"],
            "strategy.stages_per_rank=2: 1f1b runs one stage per rank; valid: 1 (or null), or "
            "strategy.pipeline_schedule=interleaved_1f1b | interleaved_zero_bubble | "
            "zbv_zero_bubble",
        ),
        (
            [
                *GPT,
                "strategy=pipeline",
                "trainer.devices=2",
                "strategy.pipeline_schedule=interleaved_1f1b",
                "strategy.stages_per_rank=1",
            ],
            "strategy.stages_per_rank=1: interleaved_1f1b interleaves several stages on each "
            "rank; valid: 2 or more (or null), or strategy.pipeline_schedule=1f1b",
        ),
        (
            [
                *GPT,
                "strategy=pipeline",
                "trainer.devices=2",
                "strategy.pipeline_schedule=zbv_zero_bubble",
                "strategy.stages_per_rank=3",
            ],
            "strategy.stages_per_rank=3: zbv_zero_bubble places 2 stages on each rank (in a V); "
            "valid: 2 (or null)",
        ),
        (
            [
                *GPT,
                "strategy=pipeline",
                "trainer.devices=2",
                "strategy.pipeline_schedule=interleaved_1f1b",
                "strategy.microbatches=3",
                "data.batch_size=12",
            ],
            "strategy.microbatches=3: interleaved_1f1b runs microbatches in rounds of the "
            "pipeline's 2 ranks; valid: a multiple of 2",
        ),
        (
            [
                *GPT,
                "strategy=pipeline",
                "trainer.devices=4",
                "strategy.pipeline_schedule=interleaved_zero_bubble",
            ],
            "strategy.pipeline_schedule=interleaved_zero_bubble: computes the weights' "
            "gradients apart from FSDP2's gradient reduction; valid with a data-parallel size "
            "of 1 (here 2), no strategy.mixed_precision and no strategy.cpu_offload; or "
            "strategy.pipeline_schedule=interleaved_1f1b",
        ),
        (
            [
                *GPT,
                "strategy=pipeline",
                "trainer.devices=2",
                "strategy.pipeline_schedule=interleaved_1f1b",
                "strategy.stages_per_rank=3",
            ],
            "strategy.stages_per_rank=3: 2 x 3 = 6 stages, more than the net's 4 blocks "
            "(model.parallel.blocks=blocks); valid: at most 4 stages in all",
        ),
        (
            [
                *GPT,
                "strategy=pipeline",
                "trainer.devices=8",
                "strategy.pipeline_parallel_size=8",
                "strategy.pipeline_schedule=gpipe",
            ],
            "strategy.pipeline_parallel_size=8: more stages than the net's 4 blocks "
            "(model.parallel.blocks=blocks); valid: 1 to 4",
        ),
        (
            [*GPT, "strategy=pipeline", "trainer.devices=2", "strategy.stage_blocks=[3,2]"],
            "strategy.stage_blocks=[3, 2]: must give each of the 2 stages at least one block, "
            "4 in all (model.parallel.blocks=blocks); or null for an even split",
        ),
        (
            [*GPT, "strategy=pipeline", "trainer.devices=3"],
            "strategy.pipeline_parallel_size=2: pipeline x tensor parallel (2 x 1) must divide "
            "the world size 3 (trainer.devices x trainer.num_nodes); valid: 1, 3",
        ),
        (
            [*GPT, "strategy=pipeline", "trainer.devices=4", "data.batch_size=12"],
            "data.batch_size=12: the global batch must divide by data-parallel size x "
            "strategy.microbatches (2 x 4)",
        ),
        (
            [
                *GPT,
                "strategy=pipeline",
                "trainer.devices=2",
                "strategy.distributed_checkpoint=false",
            ],
            "strategy.distributed_checkpoint=false: each pipeline stage saves its own parameters",
        ),
        (
            # Lightning's own rule, in one line naming the device settings
            ["trainer=cpu", "trainer.devices=0"],
            "trainer (accelerator=cpu, devices=0, num_nodes=1, precision=32-true): "
            "`devices` selected with `CPUAccelerator` should be an int > 0.",
        ),
        (
            ["strategy=fsdp", "strategy.mixed_precision=int8"],
            "strategy.mixed_precision=int8: valid: null, bf16, fp16, fp32",
        ),
        (
            ["strategy=fsdp", "strategy.name=zero3"],
            "strategy.name=zero3: unknown; valid: auto, ddp, fsdp, model_sharded, pipeline",
        ),
    ],
)
def test_invalid_parallel_settings_name_the_setting_and_the_valid_values(overrides, expected):
    problems = validate(compose_train(*overrides))
    assert problems == ([expected] if expected else []) or problems[0].startswith(expected)


def test_gpt_default_sizes_split_over_two_devices():
    assert validate(compose_train(*GPT, "strategy=model_sharded", "trainer.devices=2")) == []
    assert validate(compose_train(*GPT, "strategy=pipeline", "trainer.devices=2")) == []
    assert validate(compose_train("strategy=pipeline", "trainer.devices=2")) == [
        "strategy.pipeline_parallel_size=2: more stages than the net's 1 block "
        "(model.parallel.blocks=blocks); valid: 1 to 1"
    ]


@pytest.mark.slow  # the command line itself
def test_bad_split_fails_before_any_worker_process_starts(train_cli):
    run = train_cli("strategy=model_sharded", "trainer.devices=2", "model.net.hidden_dims=[63]")
    assert run.returncode == 2
    assert "Initializing distributed" not in run.output
    assert "Traceback" not in run.output
    assert "error: strategy.tensor_parallel_size=2 does not divide" in run.output


@pytest.mark.slow  # the command line itself
def test_unknown_strategy_lists_the_valid_ones(train_cli):
    run = train_cli("strategy=zero3")
    assert run.returncode != 0
    assert "Traceback" not in run.output
    for name in ("auto", "ddp", "fsdp", "model_sharded"):
        assert name in run.output


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["trainer.max_steps=-5"], "trainer.max_steps=-5: must be >= 0 (or -1 for no limit)"),
        (
            ["data.num_workers=-1"],
            "data.num_workers=-1: must be 0 (load in the main process) or more",
        ),
        (
            [*GPT, "model.net.context_length=64"],
            "data.context_length=128: longer than the model's model.net.context_length=64; "
            "valid: 1 to 64",
        ),
        (
            [*GPT, "data.paths=[/no/such/corpus.txt]"],
            "data.paths: no such file(s): /no/such/corpus.txt",
        ),
        pytest.param(
            ["trainer=gpu"],
            "trainer (accelerator=gpu, devices=1, num_nodes=1, precision=32-true): You "
            "requested gpu: [0] But your machine only has: []",
            marks=pytest.mark.skipif(
                torch.cuda.is_available(), reason="needs a machine without GPU"
            ),
        ),
    ],
)
def test_more_preflight_checks(overrides, expected):
    assert expected in validate(compose_train(*overrides))
