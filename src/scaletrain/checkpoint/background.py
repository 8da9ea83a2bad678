"""Checkpoint writes that training does not wait for.

A save first takes a snapshot of the state (a copy in host memory: the only part that
holds training up), then writes it in a background thread while the next steps run.
One write at a time: a save that finds the last one still writing waits for it, and
that wait counts as stall too. A reader never sees a half-written checkpoint (the write
goes through the same scratch file and rename as any other), and a write that failed
is raised by the next save, or by :meth:`BackgroundWrites.wait` at the end of training.
"""

import copy
import threading
from collections.abc import Callable
from typing import Any

import torch


def snapshot(state: Any, copies: dict | None = None) -> Any:
    """A copy of ``state`` that training cannot change: every tensor copied to host
    memory (pinned where there is a GPU, so the copy is fast), everything else deep
    copied. Tensors that are the same view of the same memory (tied weights under two
    names) stay one tensor, as ``torch.save`` would write them."""
    copies = {} if copies is None else copies
    if isinstance(state, torch.Tensor):
        view = (state.untyped_storage().data_ptr(), state.storage_offset(), state.shape,
                state.stride(), state.dtype, state.device)  # fmt: skip
        if view not in copies:
            pinned = torch.cuda.is_available() and state.device.type != "cpu"
            host = torch.empty(state.shape, dtype=state.dtype, pin_memory=pinned)
            copies[view] = host.copy_(state.detach())  # one copy, straight to host memory
        return copies[view]
    if isinstance(state, dict):
        return type(state)((key, snapshot(value, copies)) for key, value in state.items())
    if isinstance(state, list | tuple):
        return type(state)(snapshot(value, copies) for value in state)
    return copy.deepcopy(state)


class BackgroundWrites:
    """Runs checkpoint writes in a background thread, one at a time (the time training
    waits for them is measured by the save's caller: ``perf/checkpoint_stall_sec``)."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.writes = 0

    def wait(self) -> None:
        """Wait for the write in flight; raise the error of one that failed."""
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def submit(self, take_snapshot: Callable[[], Any], write: Callable[[Any], None]) -> None:
        """Take the snapshot now, then ``write(snapshot)`` in the background."""
        self.wait()
        state = take_snapshot()

        def run() -> None:
            try:
                write(state)
            except BaseException as error:  # raised on the training thread, at the next wait
                self.error = error

        self.writes += 1
        self.thread = threading.Thread(target=run, name="checkpoint-write", daemon=False)
        self.thread.start()

    @property
    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()
