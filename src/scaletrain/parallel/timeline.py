"""Where a pipeline rank's time goes in a training step: the spans in which it computes
(each microbatch's forward with its loss, backward, and weight gradients where a schedule
splits them off) and, between them, the time it waits for activations or gradients to
arrive, for its sends and for the schedule itself.

:class:`StageTimeline` times torch's stage methods on the stages of one rank; its busy
fraction (compute over the step's wall time) is logged as
``perf/pipeline_busy_fraction/rank<N>``, and the benchmark draws the spans of every rank
of a pipeline side by side (:func:`draw`).
"""

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

# What each compute span is drawn as; the time between spans is drawn as "."
MARKS = {"forward": "F", "loss": "L", "backward": "B", "weight": "W"}


@dataclass(frozen=True)
class Span:
    kind: str  # a key of MARKS
    microbatch: int
    start: float  # seconds since the step began
    end: float


class StageTimeline:
    """The compute spans of one rank's training steps (of each of its stages)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.spans: list[Span] = []  # of the last step
        self.step_seconds = 0.0  # of the last step
        self.recording = False
        self.started = 0.0
        self.window_busy = self.window_total = 0.0  # since busy_fraction() was last read

    def watch(self, stage: Any) -> None:
        """Time ``stage``'s forward, backward and weight-gradient methods (those torch's
        schedules call for each microbatch), on this instance only."""
        for method, kind in (
            ("forward_one_chunk", "forward"),
            ("backward_one_chunk", "backward"),
            ("backward_weight_one_chunk", "weight"),
        ):
            setattr(stage, method, self.timed(kind, getattr(stage, method)))

    def timed(self, kind: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` (whose first argument is the microbatch), timed as a ``kind``
        span while a step is recorded."""

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            if not self.recording:
                return function(*args, **kwargs)
            start = self.clock()
            try:
                return function(*args, **kwargs)
            finally:
                microbatch = args[0] if args and isinstance(args[0], int) else -1
                self.spans.append(
                    Span(kind, microbatch, start - self.started, self.clock() - self.started)
                )

        return run

    @contextmanager
    def step(self) -> Iterator[None]:
        """Record the spans of the training step run inside."""
        self.spans, self.recording = [], True
        self.started = self.clock()
        try:
            yield
        finally:
            self.recording = False
            self.step_seconds = self.clock() - self.started
            self.window_busy += sum(span.end - span.start for span in self.spans)
            self.window_total += self.step_seconds

    def busy_fraction(self) -> float:
        """Compute over wall time in the steps since the last call."""
        fraction = self.window_busy / self.window_total if self.window_total else 0.0
        self.window_busy = self.window_total = 0.0
        return fraction

    def last_step(self) -> dict[str, Any]:
        return {"seconds": self.step_seconds, "spans": [asdict(span) for span in self.spans]}


def draw(ranks: list[dict[str, Any]], width: int = 96) -> list[str]:
    """One line per rank of a pipeline: its last step's spans on a common time axis
    (``width`` characters for the longest step), each character the span covering most of
    it."""
    seconds = max(rank["seconds"] for rank in ranks) or 1.0  # no step recorded: an empty axis
    lines = []
    for index, stage in enumerate(ranks):
        cells = []
        for cell in range(width):
            start, end = seconds * cell / width, seconds * (cell + 1) / width
            covered: dict[str, float] = {}
            for span in stage["spans"]:
                overlap = min(end, span["end"]) - max(start, span["start"])
                if overlap > 0:
                    covered[span["kind"]] = covered.get(span["kind"], 0.0) + overlap
            busiest = max(covered, key=covered.get, default=None)
            cells.append(MARKS[busiest] if busiest and covered[busiest] * 2 >= end - start else ".")
        computing = sum(span["end"] - span["start"] for span in stage["spans"])
        busy = computing / stage["seconds"] if stage["seconds"] else 0.0
        lines.append(f"rank {index} |{''.join(cells)}| busy {busy:.2f}")
    lines.append(f"{' ' * 7}0{'-' * (width - 2)}{seconds * 1000:.0f} ms")
    return lines
