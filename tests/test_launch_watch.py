"""A rank whose launcher is gone (Lightning's rank 0, torchrun's agent) exits by itself
instead of waiting forever in a rendezvous or a collective."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts processes and kills them

RANK = "from scaletrain.runtime.launch import exit_with_launcher\n" + textwrap.dedent(
    """
    import time
    with exit_with_launcher(poll_seconds=0.1):
        print("watching", flush=True)
        time.sleep(120)  # as if waiting for rank 0 at a rendezvous
    """
)
LAUNCHER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    env = {**os.environ, "LOCAL_RANK": "1", "SCALETRAIN_LAUNCHER_PID": str(os.getpid())}
    rank = subprocess.Popen([sys.executable, "-c", sys.argv[1]], env=env)
    print(rank.pid, flush=True)
    time.sleep(120)
    """
)


def exited(pid: int) -> bool:
    """Gone, or a zombie waiting for whichever process adopted it to reap it."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_a_rank_exits_soon_after_its_launcher_is_killed():
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, RANK], stdout=subprocess.PIPE, text=True
    )
    rank = int(launcher.stdout.readline())
    # once it watches (its imports take seconds, longer on a loaded machine)
    assert launcher.stdout.readline().strip() == "watching"
    assert not exited(rank)
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()
    deadline = time.monotonic() + 10
    while not exited(rank):
        assert time.monotonic() < deadline, "the rank outlived its launcher by 10 s"
        time.sleep(0.1)


def test_a_process_started_by_hand_is_not_watched():
    # rank 0 / a plain run: its parent is the user's shell, which may go (nohup)
    run = subprocess.run(
        [sys.executable, "-c", RANK.replace("time.sleep(120)", "pass")],
        env={**os.environ, "LOCAL_RANK": "0"},
        timeout=60,
    )
    assert run.returncode == 0
