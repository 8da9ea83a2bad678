"""Read a run's weights out of any of its checkpoints, and write a directory so that no
reader ever takes a half-written one for complete (the work behind
``scaletrain.export``)."""

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp

from scaletrain.checkpoint.consolidate import META_FILE, is_sharded_checkpoint

STATE = "state_dict"


def sharded_tensors(directory: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of a sharded checkpoint whose names start with ``prefix``, whole, read
    on one process; named as in the checkpoint (``state_dict.net.<...>``)."""
    metadata = dcp.FileSystemReader(directory).read_metadata().state_dict_metadata
    tensors = {
        key: torch.empty(entry.size, dtype=entry.properties.dtype)
        for key, entry in metadata.items()
        if key.startswith(prefix) and hasattr(entry, "size")
    }
    with warnings.catch_warnings():  # that this process alone reads it is the intent
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        dcp.load(tensors, checkpoint_id=directory, no_dist=True)
    return tensors


def sharded_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The module's state of a sharded checkpoint, whole, read on one process without
    the optimizer's state (which is larger than the weights)."""
    prefix = f"{STATE}."
    tensors = sharded_tensors(directory, prefix)
    return {key.removeprefix(prefix): value for key, value in tensors.items()}


def checkpoint_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The module's state and hyperparameters of the checkpoint ``path``: a Lightning file
    or a sharded checkpoint directory."""
    if is_sharded_checkpoint(path):
        meta = torch.load(path / META_FILE, map_location="cpu", weights_only=True)
        return sharded_weights(path), meta.get("hyper_parameters", {})
    not_one = ValueError(
        f"{path}: not a checkpoint (a .ckpt file, a sharded checkpoint directory, or a "
        "run directory with checkpoints/last.ckpt)"
    )
    if not path.is_file():
        raise not_one
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch.load raises what unpickling the bytes raised
        raise not_one from None
    if not isinstance(checkpoint, dict) or STATE not in checkpoint:
        raise not_one
    return checkpoint[STATE], checkpoint.get("hyper_parameters", {})


def write_directory(out: Path, write: Callable[[Path], None], force: bool) -> None:
    """Run ``write(scratch)`` on a hidden scratch directory beside ``out``, then rename it
    to ``out`` (replacing an existing ``out`` only where ``force``): killed at any point,
    it leaves ``out`` as it was, or complete."""
    if out.exists() and not force:
        raise FileExistsError(f"--out {out}: exists; add --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    umask = os.umask(0)
    os.umask(umask)
    scratch.chmod(0o777 & ~umask)  # as a directory made with mkdir (mkdtemp's is private)
    try:
        write(scratch)
        if out.exists():
            old = scratch.with_suffix(".replaced")
            os.replace(out, old)
            os.replace(scratch, out)
            shutil.rmtree(old)
        else:
            os.replace(scratch, out)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
