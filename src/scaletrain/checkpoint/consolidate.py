"""Turn a distributed (sharded) checkpoint into one file that loads without any
distributed setup (the command: ``python -m scaletrain.consolidate``).

fsdp and model_sharded runs write each checkpoint as a directory of per-rank shards
plus Lightning's ``meta.pt``. The consolidated file is an ordinary Lightning checkpoint
(full tensors, optimizer state keyed by parameter index), usable by ``torch.load``,
``LightningModule.load_from_checkpoint``, ``scaletrain.eval`` and ``ckpt_path=`` resumes
under any strategy.
"""

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

META_FILE = "meta.pt"  # Lightning's name for the non-tensor part of a sharded checkpoint


def is_sharded_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a directory written by a distributed checkpoint save."""
    return path.is_dir() and (path / META_FILE).is_file() and (path / ".metadata").is_file()


def index_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    """Re-key an optimizer state from parameter names to the indices ``Optimizer`` uses."""
    names = [name for group in state["param_groups"] for name in group["params"]]
    index = {name: i for i, name in enumerate(names)}
    return {
        "state": {index[name]: value for name, value in state["state"].items()},
        "param_groups": [
            {**group, "params": [index[name] for name in group["params"]]}
            for group in state["param_groups"]
        ],
    }


def consolidate(checkpoint_dir: Path, output: Path) -> Path:
    """Write the full checkpoint of the sharded ``checkpoint_dir`` to ``output``."""
    if not is_sharded_checkpoint(checkpoint_dir):
        raise ValueError(
            f"ckpt_path={checkpoint_dir}: not a sharded checkpoint directory (expected "
            f"{META_FILE} and .metadata inside, as fsdp and model_sharded runs write)"
        )
    with tempfile.TemporaryDirectory() as scratch:
        flat_path = Path(scratch) / "flat.pt"
        dcp_to_torch_save(checkpoint_dir, flat_path)
        tensors = torch.load(flat_path, weights_only=True)
    checkpoint = torch.load(checkpoint_dir / META_FILE, weights_only=True)
    checkpoint["state_dict"] = tensors.pop("state_dict")
    optimizer_keys = sorted(key for key in tensors if key.startswith("optimizer_"))
    checkpoint["optimizer_states"] = [index_optimizer_state(tensors[k]) for k in optimizer_keys]
    output.parent.mkdir(parents=True, exist_ok=True)
    # Every rank of a job may consolidate the same checkpoint: each writes a scratch file
    # of its own and renames it, so no reader ever sees a half-written checkpoint.
    handle, partial = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".part")
    os.close(handle)
    torch.save(checkpoint, partial)
    os.replace(partial, output)
    return output


def name_optimizer_state(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Re-key an optimizer state from parameter indices to ``names`` (by index)."""
    return {
        "state": {names[index]: value for index, value in state["state"].items()},
        "param_groups": [
            {**group, "params": [names[index] for index in group["params"]]}
            for group in state["param_groups"]
        ],
    }


def distribute(checkpoint_file: Path, scratch_dir: Path) -> Path:
    """The single-file ``checkpoint_file`` as a distributed checkpoint in ``scratch_dir``
    (the form fsdp and pipeline runs write), its optimizer state keyed by parameter name.

    Every rank of a job converts the same file: each writes a directory of its own and
    renames it into place; a rank that finds the conversion there already uses it. The
    name carries the file's path, size and time, so a changed file is converted anew."""
    stat = checkpoint_file.stat()
    identity = f"{checkpoint_file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    output = (
        scratch_dir / f"distributed-{hashlib.blake2b(identity, digest_size=6).hexdigest()}.ckpt"
    )
    if is_sharded_checkpoint(output):
        return output
    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    names = list(checkpoint["state_dict"])  # the module's order: that of its parameters
    state = {"state_dict": checkpoint.pop("state_dict")}
    for index, optimizer in enumerate(checkpoint.pop("optimizer_states", [])):
        by_index = optimizer["state"] and isinstance(next(iter(optimizer["state"])), int)
        state[f"optimizer_{index}"] = (
            name_optimizer_state(optimizer, names) if by_index else optimizer
        )
    scratch_dir.mkdir(parents=True, exist_ok=True)
    own = Path(tempfile.mkdtemp(dir=scratch_dir, prefix=f".{output.name}."))
    dcp.save(state, storage_writer=dcp.FileSystemWriter(own), no_dist=True)
    torch.save(checkpoint, own / META_FILE)
    try:
        own.rename(output)
    except OSError:  # another rank's conversion is in place
        shutil.rmtree(own, ignore_errors=True)
    return output


def loadable_checkpoint(
    ckpt_path: str | None, sharded_strategy: bool, scratch_dir: Path, split_layers: bool = False
):
    """``ckpt_path`` as the running strategy can load it: a sharded checkpoint given to a
    strategy that does not shard (auto, ddp) is consolidated into ``scratch_dir`` first; a
    single file given to a pipeline (``split_layers``), whose ranks hold different
    parameters, is made a distributed checkpoint, which each stage reads its part of by
    name (Lightning loads a single file by broadcasting rank 0's parameters, which are
    only the first stage's)."""
    if ckpt_path is None:
        return None
    if is_sharded_checkpoint(Path(ckpt_path)):
        if sharded_strategy:
            return ckpt_path
        return str(consolidate(Path(ckpt_path), scratch_dir / "consolidated.ckpt"))
    if split_layers:
        return str(distribute(Path(ckpt_path), scratch_dir))
    return ckpt_path
