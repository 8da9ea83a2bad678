"""This process's resident memory (Linux ``/proc``; elsewhere the peak from ``getrusage``).

The run marks its baseline once its imports are done and before it builds anything, so
that what building, sharding and training the model cost can be told apart from what
the libraries themselves take.
"""

import contextlib
import resource
from pathlib import Path

STATUS = Path("/proc/self/status")
_baseline: int | None = None


def _status_bytes(field: str) -> int | None:
    if not STATUS.is_file():
        return None
    for line in STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return None


def resident_bytes() -> int:
    """Resident set size now."""
    now = _status_bytes("VmRSS")
    return now if now is not None else peak_resident_bytes()


def peak_resident_bytes() -> int:
    """The peak resident set size of this process (since the baseline, where it could be
    reset). VmHWM starts afresh with the process image; ru_maxrss would carry over the
    peak of the parent that forked this process (a launcher, a benchmark)."""
    peak = _status_bytes("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mark_baseline() -> None:
    """Record the resident size now as the baseline, and restart the peak from it (writing
    5 to clear_refs resets VmHWM; kernels that refuse keep the peak since the start)."""
    global _baseline
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    _baseline = resident_bytes()


def baseline_bytes() -> int | None:
    """The resident size at :func:`mark_baseline`; None before it."""
    return _baseline
