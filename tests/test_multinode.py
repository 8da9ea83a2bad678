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


# Two nodes simulated on one busy machine meet through ports that other tests' processes
# may take between the moment one is found free and the moment it is used: a failure while
# the nodes meet (before training) is tried once more on another port.
MEETING_FAILED = (
    "Address already in use",
    "EADDRINUSE",
    "setup_environment",  # Lightning's process-group setup
    "init_process_group",
    "rendezvous",
)


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


def failed_meeting(results: list[tuple[int, str]]) -> bool:
    return any(
        status != 0 and any(marker in output for marker in MEETING_FAILED)
        for status, output in results
    )


def failure(results: list[tuple[int, str]]) -> str:
    """Each node's status and output, the node that failed on its own first (the other is
    killed, status -9, once one fails); C++ stack frames left out."""
    order = sorted(range(len(results)), key=lambda node: results[node][0] == -signal.SIGKILL)
    return "\n\n".join(
        f"node {node} (status {results[node][0]}):\n"
        + "\n".join(line for line in results[node][1].splitlines() if "frame #" not in line)
        for node in order
    )


def test_two_torchrun_nodes_match_single_process_training(tmp_path):
    single = parity_run(tmp_path, "single")
    run_dir = tmp_path / "two_nodes"
    results = run_nodes(tmp_path, run_dir)
    if failed_meeting(results):
        print("the nodes failed to meet; once more on another port:\n" + failure(results))
        shutil.rmtree(run_dir, ignore_errors=True)
        results = run_nodes(tmp_path, run_dir)
    assert all(status == 0 for status, _ in results), failure(results)
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
