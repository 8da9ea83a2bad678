"""The optional loggers, as a user turns them on: ``logger=mlflow`` writes the run into a
local MLflow store and ``logger=wandb`` into an offline W&B run; each is read back with
the library's own reader (MLflow's client; W&B's record format) and holds the run's name,
its settings and the curves whose last values metrics.json reports."""

import json
from pathlib import Path

import pytest

from scaletrain.config.preflight import check_loggers
from tests.helpers import compose_train

SHORT = ["trainer.max_epochs=2", "test=false"]


def final_metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


@pytest.mark.slow  # starts a training run as a subprocess
def test_mlflow_holds_the_run_its_settings_and_its_curves(train_cli):
    import mlflow

    run = train_cli("logger=mlflow", *SHORT)
    assert run.returncode == 0, run.output
    assert "MLflow" not in run.output  # quiet: its store's setup is not news
    store = run.run_dir.parent / "outputs" / "mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    (recorded,) = client.search_runs([client.get_experiment_by_name("scaletrain").experiment_id])
    assert recorded.info.run_name == "mlp-digits,max_epochs=2,test=false"
    assert recorded.data.params["model"] == "mlp" and recorded.data.params["lr"] == "0.001"
    history = client.get_metric_history(recorded.info.run_id, "val/acc")
    assert [point.step for point in history] == [38, 77]  # after each epoch's last step
    assert history[-1].value == pytest.approx(final_metrics(run.run_dir)["val/acc"], abs=1e-6)


def wandb_records(path: Path):
    """The records of a W&B run file: a 7-byte header (":W&B", magic, version), then
    LevelDB's log format: 32 KiB blocks of chunks (checksum, length, kind, data), where a
    record is one FULL chunk or FIRST, MIDDLE..., LAST."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block, position, parts = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if block - position % block < 7:  # too little left for a chunk header: padding
            position += block - position % block
            continue
        length = int.from_bytes(data[position + 4 : position + 6], "little")
        kind = data[position + 6]
        parts += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL, LAST
            yield Record.FromString(parts)
            parts = b""


def key_of(item) -> str:
    return item.key or "/".join(item.nested_key)


@pytest.mark.slow  # starts a training run as a subprocess
def test_wandb_offline_holds_the_run_its_settings_and_its_curves(train_cli):
    run = train_cli("logger=wandb", *SHORT)
    assert run.returncode == 0, run.output
    assert "wandb:" not in run.output  # quiet: no banner, no upload hint (the README has it)
    (run_file,) = run.run_dir.glob("wandb/offline-run-*/run-*.wandb")
    records = list(wandb_records(run_file))
    (name,) = [r.run.display_name for r in records if r.WhichOneof("record_type") == "run"]
    assert name == "mlp-digits,max_epochs=2,test=false"
    config = {
        key_of(item): json.loads(item.value_json)
        for record in records
        if record.WhichOneof("record_type") == "config"
        for item in record.config.update
    }
    assert config["model"] == "mlp" and config["lr"] == pytest.approx(1e-3)
    rows = [
        {key_of(item): json.loads(item.value_json) for item in record.history.item}
        for record in records
        if record.WhichOneof("record_type") == "history"
    ]
    val_acc = [row["val/acc"] for row in rows if "val/acc" in row]
    assert len(val_acc) == 2
    assert val_acc[-1] == pytest.approx(final_metrics(run.run_dir)["val/acc"], abs=1e-6)


@pytest.mark.parametrize("logger", ["mlflow", "wandb"])
def test_a_logger_whose_package_is_missing_is_one_line_naming_its_extra(logger, monkeypatch):
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == logger else found(name, *a)
    )
    assert check_loggers(compose_train(f"logger={logger}")) == [
        f"logger.{logger} needs {logger}, the optional extra '{logger}': "
        f"pip install -e '.[{logger}]'"
    ]
