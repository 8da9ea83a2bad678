"""Two nodes, simulated as two torchrun invocations on 127.0.0.1 (node ranks 0 and 1,
one process each), train exactly like one process on the same global batch."""

import os
import subprocess
import sys

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


def test_two_torchrun_nodes_match_single_process_training(tmp_path):
    single = parity_run(tmp_path, "single")
    run_dir = tmp_path / "two_nodes"
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc-per-node=1",
                f"--node-rank={node_rank}",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                "-m",
                "scaletrain.train",
                "strategy=ddp",
                "trainer.num_nodes=2",
                "trainer.devices=1",
                f"paths.root_dir={tmp_path}",
                f"hydra.run.dir={run_dir}",
                *QUIET,
                *PARITY_COMMON,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node_rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output
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
