"""Two nodes, simulated as two torchrun invocations on 127.0.0.1 (node ranks 0 and 1,
one process each), train exactly like one process on the same global batch."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import (
    PARITY_COMMON,
    QUIET,
    REPO,
    TOLERANCE,
    final_weights,
    free_port,
    parity_run,
    step_losses,
)

pytestmark = pytest.mark.slow  # starts training runs as subprocesses


def start_nodes(tmp_path, run_dir, port: int) -> list[tuple[subprocess.Popen, Path]]:
    """Both torchrun nodes, each writing its output to node<rank>.out in ``tmp_path``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = []
    for node_rank in (0, 1):
        output = tmp_path / f"node{node_rank}.out"
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
            f"--node-rank={node_rank}", "--master-addr=127.0.0.1", f"--master-port={port}",
            "-m", "scaletrain.train", "strategy=ddp", "trainer.num_nodes=2",
            "trainer.devices=1", f"paths.root_dir={tmp_path}", f"hydra.run.dir={run_dir}",
            *QUIET, *PARITY_COMMON,
        ]  # fmt: skip
        with open(output, "w") as file:  # the node writes on; this process reads it later
            process = subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the node and its worker: stopped together
            )
        nodes.append((process, output))
    return nodes


# A port found free may be taken by another process before torchrun listens on it.
PORT_TAKEN = ("Address already in use", "EADDRINUSE")


def run_nodes(tmp_path, run_dir, timeout: float = 200) -> list[tuple[int, str]]:
    """Run both nodes to their end: each one's exit status and output. Where one fails,
    the other is stopped at once rather than left waiting for it in a rendezvous."""
    nodes = start_nodes(tmp_path, run_dir, free_port())
    deadline = time.monotonic() + timeout
    while any(process.poll() is None for process, _ in nodes):
        failed = any(process.poll() not in (None, 0) for process, _ in nodes)
        if failed or time.monotonic() > deadline:
            for process, _ in nodes:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        time.sleep(0.2)
    return [(process.wait(), output.read_text()) for process, output in nodes]


def test_two_torchrun_nodes_match_single_process_training(tmp_path):
    single = parity_run(tmp_path, "single")
    run_dir = tmp_path / "two_nodes"
    results = run_nodes(tmp_path, run_dir)
    if any(taken in output for _, output in results for taken in PORT_TAKEN):
        shutil.rmtree(run_dir, ignore_errors=True)
        results = run_nodes(tmp_path, run_dir)  # once more, on another port
    for node_rank, (status, output) in enumerate(results):
        assert status == 0, f"node {node_rank}:\n{output}\n\nthe other node:\n" + "\n".join(
            other for _, other in results if other != output
        )
    # one run directory, two ranks; each rank logs to its own file
    assert "rank 1: overrides" in (run_dir / "train.rank1.log").read_text()
    assert "rank 1: overrides" not in (run_dir / "train.log").read_text()
    assert (run_dir / ".hydra" / "config.yaml").is_file()

    two_nodes = type(single)(0, "", run_dir)
    for loss, reference in zip(step_losses(two_nodes), step_losses(single), strict=True):
        assert abs(loss - reference) <= TOLERANCE
    weights, reference_weights = final_weights(two_nodes), final_weights(single)
    for name, reference in reference_weights.items():
        assert torch.allclose(weights[name], reference, rtol=0, atol=TOLERANCE), name
