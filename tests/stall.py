"""A callback that stalls a run at a chosen hook, for tests of what a signal does there.

Given on the command line as
``+callbacks.stall={_target_: tests.stall.Stall, hook: <hook>, marker: <file>}``; it
writes ``marker`` when it starts stalling, so that a test knows where the run is.
"""

import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class Stall(Callback):
    """Sleeps ``seconds`` at ``hook`` (once ``after_step`` optimizer steps are done)."""

    def __init__(self, hook: str, marker: str, seconds: float = 600, after_step: int = 0) -> None:
        self.marker = Path(marker)
        self.seconds = seconds
        self.after_step = after_step
        setattr(self, hook, self.stall)

    def stall(self, trainer, *args, **kwargs) -> None:
        if trainer.global_step < self.after_step or trainer.sanity_checking:
            return
        if not self.marker.exists():
            self.marker.write_text(str(trainer.global_step))
        time.sleep(self.seconds)
