"""MNIST from its four standard IDX files in ``data_dir``; downloaded when missing."""

import logging
import os
import tempfile
import urllib.request
from pathlib import Path

import torch
from omegaconf import DictConfig

from scaletrain.data.base import ShardedDataModule
from scaletrain.data.datasets import BatchIndexedTensors
from scaletrain.data.idx import read_idx
from scaletrain.data.splits import random_split_indices
from scaletrain.errors import check_shape

log = logging.getLogger(__name__)

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


class MNISTFilesMissing(FileNotFoundError):
    """The IDX files are not in ``data_dir`` and could not be downloaded."""

    def __init__(self, data_dir: Path, stems: list[str], reason: str) -> None:
        wanted = ", ".join(f"{stem}[.gz]" for stem in stems)
        super().__init__(
            f"data.data_dir={data_dir}: MNIST files missing ({reason}): put {wanted} "
            f"in {data_dir.resolve()}"
        )


def find_file(data_dir: Path, stem: str) -> Path | None:
    """The plain or gzipped file for ``stem`` in ``data_dir``, if present."""
    for name in (stem, f"{stem}.gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    return None


def missing_stems(data_dir: Path) -> list[str]:
    return [stem for stem in FILES.values() if find_file(data_dir, stem) is None]


def download(data_dir: Path, stems: list[str], timeout: float) -> None:
    """Fetch the gzipped files from the first mirror that answers; raises OSError on failure."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        errors = []
        target = data_dir / f"{stem}.gz"
        for mirror in MIRRORS:
            # A scratch file of this process's own: nodes sharing data_dir may download at once.
            handle, partial = tempfile.mkstemp(dir=data_dir, prefix=f".{stem}.", suffix=".part")
            try:
                with (
                    os.fdopen(handle, "wb") as scratch,
                    urllib.request.urlopen(f"{mirror}{stem}.gz", timeout=timeout) as response,
                ):
                    scratch.write(response.read())
                os.replace(partial, target)  # never a half-written file under the real name
                log.info("downloaded %s", target)
                break
            except OSError as error:
                Path(partial).unlink(missing_ok=True)
                errors.append(f"{mirror}: {error}")
        else:
            raise OSError("; ".join(errors))


class MNISTDataModule(ShardedDataModule):
    """MNIST digits scaled to [0, 1]; ``val_fraction`` of the training set is held out."""

    def __init__(
        self,
        data_dir: str = "data/mnist",
        batch_size: int = 32,
        val_fraction: float = 1 / 12,
        split_seed: int = 0,
        download: bool = True,
        download_timeout: float = 20.0,
        num_workers: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        num_features: int = 784,
        num_classes: int = 10,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, shuffle=shuffle)
        check_shape("data.num_features", num_features, 784, "MNIST")
        check_shape("data.num_classes", num_classes, 10, "MNIST")
        self.data_dir = Path(data_dir)
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.download = download
        self.download_timeout = download_timeout

    @staticmethod
    def preflight_problems(data_cfg: DictConfig) -> list[str]:
        """The files a run that may not download lacks, checked before it starts."""
        data_dir = Path(data_cfg.data_dir)
        missing = missing_stems(data_dir)
        if data_cfg.download or not missing:
            return []
        return [str(MNISTFilesMissing(data_dir, missing, "data.download=false"))]

    def prepare_data(self) -> None:
        """Download missing files once per node (Lightning calls this on local rank 0)."""
        missing = missing_stems(self.data_dir)
        if not missing:
            return
        if not self.download:
            raise MNISTFilesMissing(self.data_dir, missing, "data.download=false")
        try:
            download(self.data_dir, missing, self.download_timeout)
        except OSError as error:
            raise MNISTFilesMissing(self.data_dir, missing, f"download failed: {error}") from None

    def paths(self) -> dict[str, Path]:
        """The file found for each of the four parts; raises if any is missing."""
        found = {part: find_file(self.data_dir, stem) for part, stem in FILES.items()}
        missing = [FILES[part] for part, path in found.items() if path is None]
        if missing:
            raise MNISTFilesMissing(self.data_dir, missing, "not found")
        return found

    def load_splits(self) -> dict[str, BatchIndexedTensors]:
        arrays = {part: read_idx(path) for part, path in self.paths().items()}
        splits = {}
        for prefix in ("train", "test"):
            images = torch.as_tensor(arrays[f"{prefix}_images"].copy(), dtype=torch.float32) / 255
            labels = torch.as_tensor(arrays[f"{prefix}_labels"].copy(), dtype=torch.long)
            if len(images) != len(labels):
                raise ValueError(
                    f"data.data_dir={self.data_dir}: {len(images)} {prefix} images but "
                    f"{len(labels)} labels"
                )
            splits[prefix] = BatchIndexedTensors(images, labels)
        train = splits.pop("train")
        parts = random_split_indices(len(train), {"val": self.val_fraction}, self.split_seed)
        for name, idx in parts.items():
            splits[name] = BatchIndexedTensors(train.inputs[idx], train.targets[idx])
        return splits
