"""Preflight check of ``ckpt_path``: it exists, it is a checkpoint, and it fits the model.

Runs before the Trainer starts any process, reading only what it must: the zip
directory and tensor shapes of a file (memory-mapped), the metadata of a sharded one.
"""

import logging
import zipfile
from pathlib import Path

import torch
from torch import nn
from torch.distributed.checkpoint import FileSystemReader

from scaletrain.checkpoint.atomic import recover_checkpoint
from scaletrain.checkpoint.consolidate import META_FILE, is_sharded_checkpoint

log = logging.getLogger("scaletrain")

# Values of ckpt_path that Lightning resolves itself.
LIGHTNING_KEYWORDS = ("hpc", "best", "registry")
LAST = "last.ckpt"  # the latest state of a run, in its checkpoint directory


def resolve_last(ckpt_path: str | None, checkpoint_dir: Path) -> str | None:
    """``ckpt_path=last`` as a path: ``last.ckpt`` of this run's checkpoint directory, put
    back first if a kill cut its replacement short; None (train from the start) where the
    run has not saved one yet, so that a requeued job can always pass ``ckpt_path=last``."""
    if ckpt_path != "last":
        return ckpt_path
    path = checkpoint_dir / LAST
    recover_checkpoint(path)
    if not path.exists():
        log.info("ckpt_path=last: no %s in %s yet; training from the start", LAST, checkpoint_dir)
        return None
    return str(path)


def saved_progress(path: Path) -> tuple[int, int] | None:
    """The epoch and global step a checkpoint (file or sharded directory) was saved at."""
    try:
        meta = path / META_FILE if path.is_dir() else path
        saved = torch.load(meta, map_location="cpu", mmap=True, weights_only=True)
        return saved["epoch"], saved["global_step"]
    except Exception:  # an unreadable one was refused by the preflight already
        return None


def checkpoint_step(path: Path) -> int | None:
    """The global step a checkpoint (file or sharded directory) was saved at."""
    progress = saved_progress(path)
    return progress[1] if progress else None


def resume_length_problems(ckpt_path: str | None, max_epochs: int | None) -> list[str]:
    """One line where ``trainer.max_epochs`` ends before the epoch the checkpoint is in
    (Lightning refuses that only once the checkpoint is loaded, with a traceback)."""
    if ckpt_path is None or ckpt_path in LIGHTNING_KEYWORDS or max_epochs in (None, -1):
        return []
    progress = saved_progress(Path(ckpt_path))
    if progress is None or progress[0] <= max_epochs:
        return []
    return [
        f"trainer.max_epochs={max_epochs}: the checkpoint {ckpt_path} is already in epoch "
        f"{progress[0]}; give trainer.max_epochs={progress[0]} or more to resume it"
    ]


def saved_shapes(path: Path) -> dict[str, tuple[int, ...]] | str:
    """The shape of every model tensor in the checkpoint, or what is wrong with it."""
    if path.is_dir():
        if not is_sharded_checkpoint(path):
            return "a directory, but not a sharded checkpoint (no meta.pt and .metadata)"
        metadata = FileSystemReader(path).read_metadata().state_dict_metadata
        prefix = "state_dict."
        return {
            key[len(prefix) :]: tuple(meta.size)
            for key, meta in metadata.items()
            if key.startswith(prefix) and hasattr(meta, "size")
        }
    if not zipfile.is_zipfile(path):
        return "not a checkpoint file (truncated or corrupt?)"
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as error:  # torch raises many kinds for damaged archives
        return f"cannot be read as a checkpoint ({type(error).__name__})"
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        return "has no state_dict: not a checkpoint written by train"
    return {key: tuple(tensor.shape) for key, tensor in checkpoint["state_dict"].items()}


def checkpoint_problems(ckpt_path: str | None, model: nn.Module) -> list[str]:
    """One line naming ``ckpt_path`` and the problem, if it cannot resume ``model``."""
    if ckpt_path is None or ckpt_path in LIGHTNING_KEYWORDS:
        return []
    setting, path = f"ckpt_path={ckpt_path}", Path(ckpt_path)
    if not path.exists():
        return [f"{setting}: no such file or directory; give a checkpoint written by train"]
    shapes = saved_shapes(path)
    if isinstance(shapes, str):
        return [f"{setting}: {shapes}"]
    for name, tensor in model.state_dict().items():
        expected = tuple(tensor.shape)
        if name not in shapes:
            return [f"{setting}: belongs to another model: it has no {name} {list(expected)}"]
        if shapes[name] != expected:
            return [
                f"{setting}: belongs to another model: {name} is {list(shapes[name])} there, "
                f"{list(expected)} in this model"
            ]
    return []
