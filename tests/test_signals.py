"""The job's signal stop on its own, in this process: what it records, what it stops, and
the time-limit warning it hands on to a job launcher's own handler (submitit requeues
the job from there) once the job has stopped, never before."""

import os
import signal

import pytest

from scaletrain.runtime.signals import Preempted, stop_on_signals


@pytest.fixture
def launcher_handlers():
    """Handlers a job launcher installed before the job (as submitit does): what they heard."""
    heard: list[int] = []
    signums = (signal.SIGUSR2, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: heard.append(signum)) for s in signums}
    yield heard
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def test_a_warning_during_a_step_is_recorded_then_handed_to_the_launcher_after_the_stop(
    launcher_handlers,
):
    with pytest.raises(Preempted) as stopped, stop_on_signals() as stop:
        stop.at_step_boundary = True  # a training step is running
        os.kill(os.getpid(), signal.SIGUSR2)
        assert stop.received == signal.SIGUSR2
        assert launcher_handlers == []  # not in the middle of the step
        raise Preempted(stop.exit_status)  # what the preemption callback does once saved
    assert stopped.value.code == 143
    assert launcher_handlers == [signal.SIGUSR2]
    assert signal.getsignal(signal.SIGUSR2) is not None  # the launcher's handler is back


def test_a_warning_outside_the_steps_stops_at_once_and_is_handed_on(launcher_handlers):
    with pytest.raises(Preempted), stop_on_signals():
        os.kill(os.getpid(), signal.SIGUSR1)  # no launcher handles SIGUSR1 here
    with pytest.raises(Preempted), stop_on_signals():
        os.kill(os.getpid(), signal.SIGUSR2)
    assert launcher_handlers == [signal.SIGUSR2]


def test_sigterm_stops_the_job_and_stays_with_it(launcher_handlers):
    with pytest.raises(Preempted), stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
    assert launcher_handlers == []  # a stop, not a time-limit warning: nothing to requeue


def test_a_grace_period_that_outlives_its_job_ends_nothing():
    """The watcher thread may read a signal only after the job has ended and start the
    grace period then: when that runs out, it must not end the process (in a sweep, the
    next job's; here, pytest's own)."""
    with pytest.raises(Preempted), stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
    stop._give_up()  # what such a late grace period does when it runs out
    assert stop.received == signal.SIGUSR1  # and this process is still here to say so
