"""A real TensorBoard server, started by scripts/tensorboard.sh on 127.0.0.1, serves a
finished run's scalars over its HTTP API."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def finished_run(train_cli):
    run = train_cli("trainer.max_epochs=3")
    assert run.returncode == 0, run.output
    return run


def test_tensorboard_serves_the_run_scalars(finished_run):
    port = free_port()
    server = subprocess.Popen(
        ["bash", str(REPO / "scripts" / "tensorboard.sh"), str(finished_run.run_dir), str(port)],
        env={**os.environ, "PYTHON": sys.executable},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        tags = {}
        while time.monotonic() < deadline:
            try:
                tags = get_json(f"{base}/data/plugin/scalars/tags").get("tensorboard", {})
                if "val/acc" in tags:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert {"train/loss", "val/acc", "test/acc", "perf/samples_per_sec"} <= set(tags)

        query = urllib.parse.urlencode({"tag": "val/acc", "run": "tensorboard"})
        points = get_json(f"{base}/data/plugin/scalars/scalars?{query}")
        values = [value for _, _, value in points]
        assert len(values) == 3  # one per epoch
        final = finished_run.metrics["metrics"]["val/acc"]
        assert values[-1] == pytest.approx(final, abs=1e-6)
    finally:
        server.terminate()
        server.wait(timeout=10)
