"""Turn a distributed (sharded) checkpoint into one file that loads without any
distributed setup (the command: ``python -m scaletrain.consolidate``).

fsdp and model_sharded runs write each checkpoint as a directory of per-rank shards
plus Lightning's ``meta.pt``. The consolidated file is an ordinary Lightning checkpoint
(full tensors, optimizer state keyed by parameter index), usable by ``torch.load``,
``LightningModule.load_from_checkpoint``, ``scaletrain.eval`` and ``ckpt_path=`` resumes
under any strategy.
"""

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
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


def loadable_checkpoint(ckpt_path: str | None, sharded_strategy: bool, scratch_dir: Path):
    """``ckpt_path`` as the running strategy can load it: a sharded checkpoint given to a
    strategy that does not shard (auto, ddp) is consolidated into ``scratch_dir`` first."""
    if ckpt_path is None or sharded_strategy or not is_sharded_checkpoint(Path(ckpt_path)):
        return ckpt_path
    return str(consolidate(Path(ckpt_path), scratch_dir / "consolidated.ckpt"))
