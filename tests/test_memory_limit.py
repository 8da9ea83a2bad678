"""What sharding is for, end to end: a model whose training state does not fit in the
memory each process may use trains under fsdp on 2 ranks, and fails without sharding
with a one-line out-of-memory error.

Each process is limited by RLIMIT_DATA (its private writable memory) to what the same
layout takes with a tiny model, plus a budget of 3x the big model's parameter bytes:
training it with AdamW takes 4x on one process (parameters, gradients, two moments) and
about 2x per rank on two (half of each, plus one block gathered at a time). glibc's
allocator is told to map every allocation of 64 KiB or more on its own, so that a freed
tensor leaves the data segment at once and the segment measures live memory."""

import resource
import subprocess
import sys

import pytest
import torch

from scaletrain.nets.gpt import GPT as GPTNet
from tests.helpers import CLI_ENV, cli_command

pytestmark = pytest.mark.slow  # starts training runs as subprocesses

if not sys.platform.startswith("linux"):
    pytest.skip("RLIMIT_DATA counts private writable memory on Linux", allow_module_level=True)

GPT = [
    "experiment=gpt_text",
    "data.max_bytes=200000",
    "data.batch_size=4",
    "data.context_length=32",
    "model.net.num_heads=4",
    "trainer.max_steps=2",
    "trainer.limit_val_batches=0",
    "test=false",
    "callbacks.last_checkpoint=null",
    "callbacks.model_checkpoint=null",
]
TINY = ["model.net.dim=32", "model.net.num_layers=2"]
BIG = ["model.net.dim=768", "model.net.num_layers=8"]  # 57 M parameters, 228 MB in fp32
LAYOUTS = {"single": [], "fsdp": ["strategy=fsdp", "trainer.devices=2"]}
ENV = {**CLI_ENV, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}


def train(run_dir, *overrides: str, limit: int | None = None) -> subprocess.CompletedProcess:
    def limit_memory() -> None:  # in the child, inherited by the ranks it starts
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    return subprocess.run(
        cli_command("train", run_dir, *overrides),
        cwd=run_dir.parent,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit_memory if limit is not None else None,
    )


def big_param_bytes() -> int:
    with torch.device("meta"):
        net = GPTNet(vocab_size=256, context_length=32, num_layers=8, dim=768)
    return sum(param.numel() * 4 for param in net.parameters())


def data_size_of_tiny_run(tmp_path, layout: str) -> int:
    """The largest data segment of any rank of ``layout`` training the tiny model."""
    sizes = tmp_path / f"tiny-{layout}"
    callback = f"{{_target_: tests.process_memory.SaveDataSize, path: {sizes}}}"
    run = train(
        tmp_path / f"tiny-{layout}-run",
        *GPT,
        *TINY,
        *LAYOUTS[layout],
        f"+callbacks.data_size={callback}",
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return max(int(path.read_text()) for path in tmp_path.glob(f"tiny-{layout}.rank*"))


def test_a_model_too_big_for_one_process_trains_sharded_over_two(tmp_path):
    budget = 3 * big_param_bytes()
    limit = data_size_of_tiny_run(tmp_path, "fsdp") + budget
    sharded = train(tmp_path / "big-fsdp", *GPT, *BIG, *LAYOUTS["fsdp"], limit=limit)
    assert sharded.returncode == 0, sharded.stdout[-2000:] + sharded.stderr[-3000:]

    limit = data_size_of_tiny_run(tmp_path, "single") + budget
    whole = train(tmp_path / "big-single", *GPT, *BIG, limit=limit)
    assert whole.returncode == 1, whole.stdout[-2000:] + whole.stderr[-3000:]
    errors = [line for line in whole.stderr.splitlines() if line.startswith("error:")]
    assert errors and errors[0].startswith("error: out of memory on local rank 0 allocating")
    assert "strategy=fsdp" in errors[0] and "Traceback" not in whole.stderr
