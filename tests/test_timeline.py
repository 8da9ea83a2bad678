"""The pipeline timeline: spans timed on a stage's methods, drawn side by side."""

import pytest

from scaletrain.parallel.timeline import StageTimeline, draw


class Clock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeStage:
    """torch's stage methods, each taking a known time."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def forward_one_chunk(self, microbatch, *args):
        self.clock.now += 0.02

    def backward_one_chunk(self, microbatch, *args):
        self.clock.now += 0.04

    def backward_weight_one_chunk(self, microbatch, *args):
        self.clock.now += 0.01


def test_a_step_records_each_microbatchs_compute_and_the_waits_between():
    clock = Clock()
    stage, timeline = FakeStage(clock), StageTimeline(clock)
    timeline.watch(stage)
    stage.forward_one_chunk(0)  # outside a step: not recorded
    with timeline.step():
        stage.forward_one_chunk(0)
        clock.now += 0.04  # waiting for the other stage
        stage.backward_one_chunk(0)
        stage.backward_weight_one_chunk(0)
    kinds = [(span.kind, span.microbatch) for span in timeline.spans]
    assert kinds == [("forward", 0), ("backward", 0), ("weight", 0)]
    assert timeline.last_step()["seconds"] == pytest.approx(0.11)
    assert timeline.spans[1].start == pytest.approx(0.06)  # after the wait
    assert timeline.busy_fraction() == pytest.approx(0.07 / 0.11)
    assert timeline.busy_fraction() == 0.0  # the window starts afresh


def test_draw_lays_the_stages_on_one_time_axis():
    stages = [
        {"seconds": 1.0, "spans": [
            {"kind": "forward", "microbatch": 0, "start": 0.0, "end": 0.25},
            {"kind": "backward", "microbatch": 0, "start": 0.75, "end": 1.0},
        ]},
        {"seconds": 0.5, "spans": [
            {"kind": "forward", "microbatch": 0, "start": 0.25, "end": 0.5},
        ]},
    ]  # fmt: skip
    lines = draw(stages, width=8)
    assert lines[0] == "rank 0 |FF....BB| busy 0.50"
    assert lines[1] == "rank 1 |..FF....| busy 0.50"
    assert lines[2].endswith("1000 ms")
