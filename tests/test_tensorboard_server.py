"""A real TensorBoard server, started by scripts/tensorboard.sh on 127.0.0.1, on the index
of a log directory where a sweep of classifiers, a language model and a failed run share
the space: each run is listed by a name that says what ran, then its date, and the
HPARAMS tab ticks the settings and metrics a user compares runs by."""

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


def train(root, *args: str, status: int = 0) -> None:
    command = [sys.executable, "-m", "scaletrain.train", *args, f"paths.root_dir={root}", *QUIET]
    done = subprocess.run(command, cwd=root, env=CLI_ENV, capture_output=True, text=True)
    assert done.returncode == status, done.stdout + done.stderr


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    """outputs/ with a 2-job classifier sweep, a GPT run, a run that failed after it had
    trained, and one that failed before (the MNIST files are missing)."""
    root = tmp_path_factory.mktemp("shared")
    train(root, "-m", "model.optimizer.lr=1e-3,3e-3", "trainer.max_epochs=2")
    train(root, *GPT_SMALL)
    failing = "+callbacks.fail._target_=tests.user_callbacks.FailAtStep"
    train(root, failing, "+callbacks.fail.step=5", "test=false", status=1)
    train(root, "experiment=seed_mnist", status=2)
    return root / "outputs"


@pytest.fixture(scope="module")
def server(log_dir):
    port = free_port()
    process = subprocess.Popen(
        ["bash", str(REPO / "scripts" / "tensorboard.sh"), str(log_dir / "tensorboard"), str(port)],
        env={**os.environ, "PYTHON": sys.executable},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if len(get_json(f"{base}/data/runs")) >= 4:
                break
        except OSError:
            pass
        time.sleep(0.5)
    yield base
    process.terminate()
    process.wait(timeout=10)


def test_runs_are_listed_by_what_ran_then_when(server, log_dir):
    runs = get_json(f"{server}/data/runs")
    (sweep,) = [path.name for path in (log_dir / "multiruns").iterdir()]
    (gpt, failed) = sorted(path.name for path in (log_dir / "runs").iterdir())
    assert sorted(runs) == sorted(
        [
            f"mlp-digits, lr=0.001, max_epochs=2 @ {sweep} #0",  # as Hydra writes a value
            f"mlp-digits, lr=0.003, max_epochs=2 @ {sweep} #1",
            "gpt_text, limit_train_batches=20, val_check_interval=10, limit_val_batches=2, "
            f"limit_test_batches=2, num_layers=1 @ {gpt}",
            f"mlp-digits, _target_=tests.user_callbacks.FailAtStep, step=5, test=false @ {failed}",
        ]
    )  # the run that failed before it trained left nothing (nor a run directory)


def test_scalars_are_served_per_run(server, log_dir):
    tags = get_json(f"{server}/data/plugin/scalars/tags")
    (classifier,) = [run for run in tags if run.startswith("mlp-digits, lr=0.003,")]
    assert {"train/loss", "val/acc", "test/acc", "perf/samples_per_sec"} <= set(tags[classifier])
    query = urllib.parse.urlencode({"tag": "val/acc", "run": classifier})
    points = get_json(f"{server}/data/plugin/scalars/scalars?{query}")
    assert len(points) == 2  # one per epoch
    (job_dir,) = [path.parent for path in log_dir.glob("multiruns/*/1/metrics.json")]
    final = json.loads((job_dir / "metrics.json").read_text())["metrics"]["val/acc"]
    assert points[-1][2] == pytest.approx(final, abs=1e-6)


def test_hparams_ticks_the_settings_and_metrics_runs_are_compared_by(server):
    experiment = get_json(
        f"{server}/data/plugin/hparams/experiment", {"experimentName": "", "includeMetrics": True}
    )
    settings = {info["name"] for info in experiment["hparamInfos"]}
    assert {
        "model",
        "data",
        "experiment",
        "strategy",
        "world_size",
        "global_batch",
        "lr",
        "seed",
    } < settings
    assert "callbacks" not in settings  # a group's option, in the run's name only
    # TensorBoard's page ticks the first five settings marked as differing, by name, and
    # the first five metrics
    ticked = sorted(info["name"] for info in experiment["hparamInfos"] if info["differs"])[:5]
    assert {"model", "data", "strategy", "lr"} < set(ticked)
    metrics = [info["name"]["tag"] for info in experiment["metricInfos"]]
    assert metrics[0] in ("val/acc_best", "val/loss_best")  # the monitored metric's best
    assert all(name.split("/")[0] in ("val", "test") for name in metrics[:5])
    assert {"val/acc_best", "test/acc", "val/loss_best", "test/ppl"} <= set(metrics)
    assert not [name for name in metrics if name.startswith("perf/")]

    def groups(statuses: list[str]) -> list[dict]:
        query = {
            "experimentName": "",
            "allowedStatuses": statuses,
            "colParams": [],
            "startIndex": 0,
            "sliceSize": 100,
            "includeMetrics": True,
        }
        return get_json(f"{server}/data/plugin/hparams/session_groups", query)["sessionGroups"]

    finished = groups(["STATUS_SUCCESS"])
    assert len(finished) == 3
    for group in finished:
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        wanted = "test/ppl" if group["hparams"]["model"] == "gpt" else "test/acc"
        assert wanted in values, group
    (failed,) = groups(["STATUS_FAILURE"])
    assert "FailAtStep" in failed["name"]
