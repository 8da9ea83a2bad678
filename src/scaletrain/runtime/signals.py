"""SIGTERM (a scheduler's notice), SIGINT (Ctrl+C) and SIGUSR1/SIGUSR2 (a scheduler's
warning before a time limit): a run always ends promptly.

While training steps run, a signal is only recorded: the preemption callback then stops
every rank after the same step and saves last.ckpt there. Anywhere else (setting up,
loading data, before the first step, validating, testing) there is no step end to wait
for, so the signal stops the run at once, with nothing saved: the last checkpoint stays
as it was (checkpoint writes are atomic). Two guards cover a step that never ends:

- a watcher thread learns of every signal through ``signal.set_wakeup_fd``, which works
  even while the main thread is stuck inside one long operation and cannot run Python
  signal handlers; if the run has not begun to stop ``grace_period`` seconds after the
  first signal, it exits without saving;
- a second signal exits at once.

A scheduler's warning is then handed on to the handler the process had before the job,
where that is a Python function: submitit's, in a job it started, which requeues the job
(it resumes from last.ckpt: ``hydra_plugins.scaletrain_launcher``). It runs only once every
rank has stopped, never in the middle of a step, where it would stop one rank alone.

Exit status: 143, the status of a job ended by SIGTERM, whichever signal it was; ranks
that Lightning started as children of rank 0 exit with 0 instead, because Lightning kills
the whole job at once (rank 0 included, mid-save) when such a child exits with another
status, and rank 0 reports the job's 143.
"""

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger("scaletrain")

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
# The signals a scheduler sends some time before a job's time limit (SLURM's --signal):
# the ones a job launcher may handle itself, by requeueing the job.
REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
EXIT_STATUS = 128 + signal.SIGTERM
DEFAULT_GRACE_PERIOD = 30.0  # seconds


class Preempted(SIGTERMException):
    """Raised on a rank that stops because of a signal; ``code`` is the exit status."""


class SignalStop:
    """The process's handling of SIGTERM and SIGINT during one job.

    ``at_step_boundary`` is set by the preemption callback while training steps run: a
    signal then waits for the end of the step. ``stopping`` is set once the stop has
    begun (the checkpoint is being saved): the grace period no longer applies.
    """

    def __init__(
        self, grace_period: float = DEFAULT_GRACE_PERIOD, exit_status: int = EXIT_STATUS
    ) -> None:
        self.grace_period = grace_period
        self.exit_status = exit_status
        self.received: int | None = None
        self.at_step_boundary = False
        self.stopping = False
        self._previous: dict[int, object] = {}
        self._previous_wakeup_fd = -1
        self._sockets: tuple[socket.socket, socket.socket] | None = None
        self._timer: threading.Timer | None = None
        # set once the job's handling is uninstalled: a signal the watcher reads late, and
        # a grace period still running, then belong to no job and end nothing
        self._ended = threading.Event()

    # -- in the main thread, between two Python operations ------------------------------
    def handle(self, signum: int, frame) -> None:
        if self.received is not None:
            return  # a second signal: the watcher thread exits
        self.received = signum
        if not self.at_step_boundary:
            self.stop_now()

    def stop_now(self) -> None:
        """Stop without saving: there is no step end to wait for."""
        name = signal.Signals(self.received or signal.SIGTERM).name
        log.info("stopped by %s outside a training step: nothing saved", name)
        raise Preempted(self.exit_status)

    # -- in the watcher thread, whatever the main thread is doing -----------------------
    def _watch(self, reader: socket.socket) -> None:
        count = 0
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                data = b""
            if not data:  # uninstalled
                reader.close()
                return
            for signum in data:
                if signum not in SIGNALS or self._ended.is_set():
                    continue  # another handled signal (the DataLoader's SIGCHLD), or too late
                count += 1
                if count == 1:
                    self._timer = threading.Timer(self.grace_period, self._give_up)
                    self._timer.daemon = True
                    self._timer.start()
                else:
                    self._exit(f"error: {signal.Signals(signum).name} again: exiting now")

    def _give_up(self) -> None:
        if self.stopping or self._ended.is_set():
            return
        self._exit(
            "error: no training step ended within callbacks.checkpoint_on_preemption."
            f"grace_period={self.grace_period:g} s of the signal: exiting without saving; "
            "the last checkpoint is intact"
        )

    def _exit(self, message: str) -> None:
        log.error(message)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(self.exit_status)

    # -- install and restore, in the main thread ----------------------------------------
    def install(self) -> None:
        """Handle the signals with :meth:`handle` (again: Lightning replaces the SIGTERM
        handler when it starts a stage)."""
        for signum in SIGNALS:
            if signal.getsignal(signum) != self.handle:
                self._previous.setdefault(signum, signal.getsignal(signum))
                signal.signal(signum, self.handle)
        if self._sockets is None:
            reader, writer = socket.socketpair()
            writer.setblocking(False)
            self._sockets = (reader, writer)
            self._previous_wakeup_fd = signal.set_wakeup_fd(
                writer.fileno(), warn_on_full_buffer=False
            )
            threading.Thread(
                target=self._watch, args=(reader,), name="signal-watch", daemon=True
            ).start()

    def launcher_handler(self) -> Callable[[int, FrameType | None], Any] | None:
        """The job launcher's own handler of the signal received, if it had one (submitit's
        requeue on SIGUSR2)."""
        if self.received not in REQUEUE_SIGNALS:
            return None
        previous = self._previous.get(self.received)
        return previous if callable(previous) else None

    def uninstall(self) -> None:
        self._ended.set()
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        if self._sockets is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            reader, writer = self._sockets
            writer.close()  # the watcher reads end-of-file and returns
            self._sockets = None
        if self._timer is not None:
            self._timer.cancel()


_current: SignalStop | None = None


def _reset_in_forked_child() -> None:
    """A process forked during the job (a DataLoader worker) gets the default handling
    back: the job's handler and wake-up socket belong to the parent, which would count
    the child's copy of a Ctrl+C as a second one."""
    if _current is None:
        return
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for signum in REQUEUE_SIGNALS:  # the parent stops the job: a warning is its alone
            signal.signal(signum, signal.SIG_IGN)
    except ValueError:  # forked from a thread other than the main one
        pass


os.register_at_fork(after_in_child=_reset_in_forked_child)


def current() -> SignalStop | None:
    """The handling installed for the running job, if any."""
    return _current


@contextmanager
def stop_on_signals(exit_status: int = EXIT_STATUS) -> Iterator[SignalStop]:
    """Handle the signals as this module describes for the duration of one job (the
    preemption callback sets the grace period once the run has set up its callbacks)."""
    global _current
    stop = SignalStop(exit_status=exit_status)
    stop.install()
    _current = stop
    try:
        yield stop
    except Preempted:
        hand_on = stop.launcher_handler()
        _current = None
        stop.uninstall()
        if hand_on is not None:  # every rank has stopped (and saved): requeue now
            hand_on(stop.received, None)
        raise
    finally:
        _current = None
        stop.uninstall()
