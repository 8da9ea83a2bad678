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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch.distributed.tensor import DTensor

from scaletrain.checkpoint.background import BackgroundWrites, snapshot


class SaveFailed(OSError):
    """A checkpoint that could not be written (a full disk, a failed write): nothing of it
    is left, and the checkpoints written before it are intact.

    Attributes: ``path`` (the checkpoint), ``needed`` (the bytes this process had to
    write), ``free`` (the bytes left on that file system), ``reason`` (the error, in
    words), ``ranks`` (the processes writing their parts of it, each raising this).
    """

    def __init__(self, path: Path, needed: int, reason: BaseException, ranks: int = 1) -> None:
        self.path, self.needed = Path(path), needed
        self.ranks = ranks  # of a sharded save: each writes its part, and each raises this
        self.free = free_bytes(self.path.parent)
        self.reason = reason_of(reason)
        super().__init__(f"writing {self.path} failed: {self.reason}")


def reason_of(error: BaseException) -> str:
    """The operating system's words for the first ``OSError`` behind ``error``, else the
    first line of the innermost error (a sharded save's exception carries each failed
    rank's, without their causes)."""
    seen, innermost = [error], error
    while seen:
        current = seen.pop(0)
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        failures = getattr(current, "failures", None)  # torch.distributed.checkpoint's
        if isinstance(failures, dict):
            seen += [failure[0] for failure in failures.values()]
        seen += [cause for cause in (current.__cause__, current.__context__) if cause]
        if current is not error and not isinstance(failures, dict):
            innermost = current
    lines = [line for line in str(innermost).splitlines() if line.strip()]
    return " ".join(lines[-1].split())[:200] if lines else type(innermost).__name__


def free_bytes(directory: Path) -> int:
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    return shutil.disk_usage(directory).free


def state_bytes(state: Any) -> int:
    """The bytes of the tensors in ``state`` that this process holds (its shards)."""
    if isinstance(state, DTensor):
        return state.to_local().nbytes
    if isinstance(state, torch.Tensor):
        return state.nbytes
    if isinstance(state, dict):
        return sum(state_bytes(value) for value in state.values())
    if isinstance(state, list | tuple):
        return sum(state_bytes(value) for value in state)
    return 0


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


def link_file(source: Path, target: Path) -> None:
    """``target`` as another name of the file ``source`` (its copy where the file system
    has no hard links)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def keep_copy(path: Path, copy: Path) -> None:
    """Keep the checkpoint ``path`` (a file or a sharded directory) also as ``copy``,
    without writing it again: hard links to its files, which a later replacement of
    ``path`` (a rename of a new file over it) leaves as they are. Atomic like a save."""
    scratch = scratch_path(copy)
    remove(scratch)
    if path.is_dir():
        scratch.mkdir()
        for file in path.iterdir():
            link_file(file, scratch / file.name)
    else:
        link_file(path, scratch)
    replace_path(scratch, copy)


def recover_checkpoint(path: Path) -> None:
    """Undo a replacement that a kill cut off between its two renames."""
    aside = aside_path(path)
    if not path.exists() and aside.exists():
        # FileNotFoundError: another process of the job put it back first
        with contextlib.suppress(FileNotFoundError):
            os.replace(aside, path)


@dataclass(frozen=True)
class InBackground:
    """``storage_options`` of a save that training does not wait for (see
    ``scaletrain.checkpoint.background``); ``then`` runs once the checkpoint is in place."""

    then: Callable[[], None] | None = None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer for single files, with :func:`write_file_atomically`
    for local paths (remote ones keep Lightning's transaction), in the background where
    the save asks for it (``storage_options=InBackground()``)."""

    def __init__(self) -> None:
        super().__init__()
        self.background = BackgroundWrites()

    def save_checkpoint(
        self,
        checkpoint: dict[str, Any],
        path: str | os.PathLike,
        storage_options: Any | None = None,
    ) -> None:
        if isinstance(storage_options, InBackground):
            self.background.submit(
                lambda: snapshot(checkpoint),
                lambda state: self.write(state, Path(path), storage_options.then),
            )
            return
        self.background.wait()  # saves are written in the order they were made
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        self.write(checkpoint, Path(path))

    @staticmethod
    def write(checkpoint: dict[str, Any], path: Path, then: Callable[[], None] | None = None):
        try:
            write_file_atomically(path, lambda file: torch.save(checkpoint, file))
        except (OSError, RuntimeError) as error:  # torch.save reports a failed write either way
            raise SaveFailed(path, state_bytes(checkpoint), error) from error
        if then is not None:
            then()

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        self.background.wait()  # a checkpoint goes only once the one replacing it is written
        super().remove_checkpoint(path)

    def teardown(self) -> None:
        self.background.wait()  # training ends with every checkpoint written
        super().teardown()
