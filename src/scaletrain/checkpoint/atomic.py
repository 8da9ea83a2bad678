"""Checkpoint writes that a kill cannot tear: a reader sees the old checkpoint or the new
one, never a part of one.

A file is written to a hidden scratch file beside its final path, flushed to disk and
renamed over it (``os.replace`` is atomic within a directory). Lightning's own
``_atomic_save`` stages in the system's temp directory, and where that is another file
system the final "rename" is a copy into place, which a kill can cut short.

A sharded checkpoint is a directory, which cannot be swapped in one rename: the new one
is written in a hidden scratch directory, the old one renamed aside, the new one renamed
into place, the old one deleted (likewise where a file replaces a directory or back). A
kill between the two renames leaves the old checkpoint aside, and
:func:`recover_checkpoint` puts it back.
"""

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


def scratch_path(path: Path) -> Path:
    """Where the next version of ``path`` is written (hidden, and not named ``*.ckpt``,
    so ``ckpt_path=last`` never picks it up)."""
    return path.with_name(f".{path.name}.partial")


def aside_path(path: Path) -> Path:
    """Where the previous version of a checkpoint directory waits while it is replaced."""
    return path.with_name(f".{path.name}.old")


def sync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def replace_path(new: Path, path: Path) -> None:
    """Make the complete file or directory ``new`` take the place of ``path``."""
    if path.is_dir() or new.is_dir():
        # a rename cannot put a directory over a path, nor a file over a directory
        aside = aside_path(path)
        remove(aside)
        if path.exists():
            os.replace(path, aside)
        os.replace(new, path)
        sync_directory(path.parent)
        remove(aside)
    else:
        os.replace(new, path)
        sync_directory(path.parent)


def write_file_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a scratch file, flush it to disk, then make it ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = scratch_path(path)
    try:
        with open(scratch, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:  # a full disk, say: leave no scratch file behind
        scratch.unlink(missing_ok=True)
        raise
    replace_path(scratch, path)


def recover_checkpoint(path: Path) -> None:
    """Undo a replacement that a kill cut off between its two renames."""
    aside = aside_path(path)
    if not path.exists() and aside.exists():
        # FileNotFoundError: another process of the job put it back first
        with contextlib.suppress(FileNotFoundError):
            os.replace(aside, path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer for single files, with :func:`write_file_atomically`
    for local paths (remote ones keep Lightning's transaction)."""

    def save_checkpoint(
        self,
        checkpoint: dict[str, Any],
        path: str | os.PathLike,
        storage_options: Any | None = None,
    ) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        write_file_atomically(Path(path), lambda file: torch.save(checkpoint, file))
