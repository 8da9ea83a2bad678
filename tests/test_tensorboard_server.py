"""A real TensorBoard server, started by scripts/tensorboard.sh on 127.0.0.1, on a log
directory where a sweep of classifiers and a language model share the space: each run
is listed under a name that says what ran, and the HPARAMS tab lists a short set of
settings and every run's own final metrics."""

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from tests.helpers import CLI_ENV, REPO, free_port

pytestmark = pytest.mark.slow  # starts training runs as subprocesses

QUIET = ["callbacks.rich_progress_bar=null", "trainer.enable_progress_bar=false"]
GPT_SMALL = [
    "experiment=gpt_text",
    "trainer.limit_train_batches=20",
    "trainer.val_check_interval=10",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "model.net.num_layers=1",
]


def get_json(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def train(root, *args: str) -> None:
    command = [sys.executable, "-m", "scaletrain.train", *args, f"paths.root_dir={root}", *QUIET]
    done = subprocess.run(command, cwd=root, env=CLI_ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    """outputs/ with a 2-job classifier sweep and a GPT run."""
    root = tmp_path_factory.mktemp("shared")
    train(root, "-m", "model.optimizer.lr=1e-3,3e-3", "trainer.max_epochs=2")
    train(root, *GPT_SMALL)
    return root / "outputs"


@pytest.fixture(scope="module")
def server(log_dir):
    port = free_port()
    process = subprocess.Popen(
        ["bash", str(REPO / "scripts" / "tensorboard.sh"), str(log_dir), str(port)],
        env={**os.environ, "PYTHON": sys.executable},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if len(get_json(f"{base}/data/runs")) >= 3:
                break
        except OSError:
            pass
        time.sleep(0.5)
    yield base
    process.terminate()
    process.wait(timeout=10)


def test_runs_are_listed_by_what_ran(server):
    names = [run.rsplit("/", 1)[-1] for run in get_json(f"{server}/data/runs")]
    assert sorted(names) == sorted(
        [
            "mlp-digits,lr=0.001,max_epochs=2",  # as Hydra writes a swept value
            "mlp-digits,lr=0.003,max_epochs=2",
            "gpt_text,limit_train_batches=20,val_check_interval=10,limit_val_batches=2,"
            "limit_test_batches=2,num_layers=1",
        ]
    )


def test_scalars_are_served_per_run(server, log_dir):
    tags = get_json(f"{server}/data/plugin/scalars/tags")
    (classifier,) = [run for run in tags if run.endswith("lr=0.003,max_epochs=2")]
    assert {"train/loss", "val/acc", "test/acc", "perf/samples_per_sec"} <= set(tags[classifier])
    query = urllib.parse.urlencode({"tag": "val/acc", "run": classifier})
    points = get_json(f"{server}/data/plugin/scalars/scalars?{query}")
    assert len(points) == 2  # one per epoch
    (job_dir,) = [path.parent for path in log_dir.glob("multiruns/*/1/metrics.json")]
    final = json.loads((job_dir / "metrics.json").read_text())["metrics"]["val/acc"]
    assert points[-1][2] == pytest.approx(final, abs=1e-6)


def test_hparams_lists_the_settings_that_vary_and_every_runs_own_metrics(server):
    experiment = get_json(
        f"{server}/data/plugin/hparams/experiment", {"experimentName": "", "includeMetrics": True}
    )
    settings = {info["name"] for info in experiment["hparamInfos"]}
    assert settings == {
        "model", "data", "experiment", "strategy", "world_size", "global_batch", "lr", "seed",
        "trainer.max_epochs", "trainer.limit_train_batches", "trainer.val_check_interval",
        "trainer.limit_val_batches", "trainer.limit_test_batches", "model.net.num_layers",
    }  # fmt: skip
    metrics = {info["name"]["tag"] for info in experiment["metricInfos"]}
    assert {"val/acc_best", "test/acc", "val/loss_best", "test/ppl"} <= metrics

    groups = get_json(
        f"{server}/data/plugin/hparams/session_groups",
        {
            "experimentName": "",
            "allowedStatuses": ["STATUS_SUCCESS"],  # every run finished
            "colParams": [],
            "startIndex": 0,
            "sliceSize": 100,
            "includeMetrics": True,
        },
    )["sessionGroups"]
    assert len(groups) == 3
    for group in groups:
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        wanted = "test/ppl" if group["hparams"]["model"] == "gpt" else "test/acc"
        assert wanted in values, group
