"""Weights a net starts from instead of drawn ones: the ``*.safetensors`` files of a
directory as ``save_pretrained`` writes them (one file, or shards listed by
``model.safetensors.index.json``), read lazily: a rank reads just the rows of each tensor
that it holds (``scaletrain.parallel.materialize``), never the whole model.
"""

import json
from pathlib import Path

import torch

INDEX_FILE = "model.safetensors.index.json"


class WeightFiles:
    """The tensors of ``directory``, named as the net names its parameters: the file's key
    with ``prefix`` before it (a net that wraps the saved model in an attribute)."""

    def __init__(self, directory: str | Path, prefix: str = "") -> None:
        self.directory = Path(directory)
        self.prefix = prefix
        self.file_of: dict[str, Path] = {}
        index = self.directory / INDEX_FILE
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            self.file_of = {key: self.directory / name for key, name in weight_map.items()}
        else:
            from safetensors import safe_open

            for path in sorted(self.directory.glob("*.safetensors")):
                with safe_open(path, "pt") as handle:
                    self.file_of.update(dict.fromkeys(handle.keys(), path))

    def key(self, name: str) -> str:
        return name.removeprefix(self.prefix)

    def __contains__(self, name: str) -> bool:
        return name.startswith(self.prefix) and self.key(name) in self.file_of

    def read(self, name: str, shape: torch.Size, rows: range | None = None) -> torch.Tensor:
        """Parameter ``name`` (of ``shape``), or only ``rows`` of it, as stored."""
        from safetensors import safe_open

        key = self.key(name)
        path = self.file_of[key]
        # opened for each tensor: a file stays mapped while open, and the pages read
        # would count as this process's memory until it is closed
        with safe_open(path, "pt") as handle:
            stored = handle.get_slice(key)
            if tuple(stored.get_shape()) != tuple(shape):
                raise ValueError(
                    f"model.net.pretrained={self.directory}: {key} in {path.name} has shape "
                    f"{tuple(stored.get_shape())}, the net built from its config.json "
                    f"{tuple(shape)}"
                )
            return stored[rows.start : rows.stop] if rows is not None else stored[:]

    def missing(self, names: list[str]) -> list[str]:
        """Of the net's parameters ``names``, the file keys that no file holds."""
        return [self.key(name) for name in names if name not in self]
