"""The MNIST loader reads real IDX files, plain or gzipped, and explains what is missing."""

import gzip

import numpy as np
import pytest

from scaletrain.data.idx import IDXFormatError, read_idx, write_idx
from scaletrain.data.mnist import FILES, MNISTDataModule, MNISTFilesMissing
from tests.helpers import run_in_process


def write_mnist(directory, gz: bool, train: int = 120, test: int = 40) -> dict:
    """Small MNIST-format files: noise with a bright stripe whose row encodes the label."""
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, count in (("train", train), ("test", test)):
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = rng.integers(0, 60, (count, 28, 28)).astype(np.uint8)
        for image, label in zip(images, labels, strict=True):
            image[2 * label + 4 : 2 * label + 6] = 255
        arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"] = images, labels
    suffix = ".gz" if gz else ""
    for part, array in arrays.items():
        write_idx(directory / f"{FILES[part]}{suffix}", array)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, array)
    np.testing.assert_array_equal(read_idx(path), array)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_datamodule_reads_plain_and_gzipped_files(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz)
    dm = MNISTDataModule(data_dir=str(tmp_path), batch_size=8, val_fraction=0.25, download=False)
    dm.prepare_data()
    dm.setup()
    assert {k: len(v) for k, v in dm.splits.items()} == {"test": 40, "val": 30, "train": 90}
    inputs, targets = dm.splits["test"][list(range(40))]
    assert inputs.shape == (40, 28, 28)
    assert float(inputs.max()) <= 1.0
    np.testing.assert_array_equal(targets.numpy(), arrays["test_labels"])
    np.testing.assert_allclose(inputs[3].numpy() * 255, arrays["test_images"][3], atol=1e-3)


def test_truncated_file_names_the_file_and_sizes(tmp_path):
    write_mnist(tmp_path, gz=False)
    path = tmp_path / FILES["train_images"]
    path.write_bytes(path.read_bytes()[:-100])
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(IDXFormatError, match=r"train-images-idx3-ubyte: truncated .* expected"):
        dm.setup()


def test_truncated_gzip_stream_is_a_format_error(tmp_path):
    path = tmp_path / "x.gz"
    write_idx(path, np.zeros((50, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(IDXFormatError, match="cannot be read as IDX"):
        read_idx(path)


def test_not_an_idx_file(tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(gzip.compress(b"hello"))  # gzip data under a plain name
    with pytest.raises(IDXFormatError, match="bad magic number"):
        read_idx(path)


def test_missing_files_without_download_say_which_files_to_put_where(tmp_path):
    write_mnist(tmp_path, gz=True)
    (tmp_path / f"{FILES['test_labels']}.gz").unlink()
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(MNISTFilesMissing) as error:
        dm.prepare_data()
    message = str(error.value)
    assert "t10k-labels-idx1-ubyte[.gz]" in message
    assert "train-images" not in message
    assert str(tmp_path) in message
    assert "\n" not in message


def test_failed_download_leaves_no_partial_file_and_explains(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr("urllib.request.urlopen", refuse)
    dm = MNISTDataModule(data_dir=str(tmp_path / "mnist"), download=True)
    with pytest.raises(MNISTFilesMissing, match="download failed: .*network unreachable"):
        dm.prepare_data()
    assert list((tmp_path / "mnist").iterdir()) == []


def test_seed_mnist_experiment_trains_on_idx_files(tmp_path):
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    write_mnist(tmp_path / "data" / "mnist", gz=True, train=600, test=100)
    metrics = run_in_process(
        tmp_path / "run",
        "experiment=seed_mnist",
        f"paths.root_dir={tmp_path}",
        "trainer.max_epochs=2",
        "data.download=false",
    )
    assert metrics["test/acc"] > 0.9  # the stripe gives the label away


@pytest.mark.slow  # the command line itself
def test_seed_mnist_without_files_is_a_preflight_error(train_cli):
    """Reported before any process starts, together with the other problems."""
    run = train_cli("experiment=seed_mnist", "data.download=false", "data.batch_size=0")
    assert run.returncode == 2
    assert "Traceback" not in run.output and "GPU available" not in run.output
    errors = [line for line in run.output.splitlines() if "error:" in line]
    assert len(errors) == 2, run.output
    assert "data.batch_size=0: must be a positive integer" in errors[0]
    assert "data.data_dir=" in errors[1] and "train-images-idx3-ubyte[.gz]" in errors[1]
