"""The virtual-time driver: outputs land at step end, idle gaps are skipped, loops are bounded."""

from __future__ import annotations

import pytest

from lodestar_vllm.sim.engine import EngineRequest
from lodestar_vllm.sim.virtual_driver import closed_loop, run_virtual
from tests.engine.conftest import make_engine


def test_single_request_timings_are_sums_of_step_durations() -> None:
    probe = make_engine()
    probe.add_request(EngineRequest("a", 300, 3, [], 0.0))
    durations = []
    now = 0.0
    while probe.has_unfinished():
        d = probe.step(now).duration
        durations.append(d)
        now += d
    result = run_virtual(make_engine(), [(5.0, EngineRequest("a", 300, 3, [], 5.0))])
    t = result.timings["a"]
    assert t.ttft == pytest.approx(durations[0])
    assert t.e2e == pytest.approx(sum(durations))
    assert t.itl == pytest.approx((durations[1] + durations[2]) / 2)
    assert t.output_tokens == 3 and result.steps == 3


def test_idle_gap_jumps_to_the_next_arrival() -> None:
    arrivals = [(0.0, EngineRequest("a", 50, 2, [], 0.0)), (100.0, EngineRequest("b", 50, 2, [], 100.0))]
    result = run_virtual(make_engine(), arrivals)
    assert result.timings["b"].first_token > 100.0
    assert result.timings["b"].ttft == pytest.approx(result.timings["a"].ttft)
    assert result.steps == 4


def test_runs_are_bounded_by_steps_and_time() -> None:
    arrivals = [(0.0, EngineRequest(f"r{i}", 100, 1000, [], 0.0)) for i in range(4)]
    assert run_virtual(make_engine(), arrivals, max_steps=10).steps == 10
    cut = run_virtual(make_engine(), arrivals, until=0.5)
    assert 0.5 <= cut.end_time < 0.6
    assert any(t.finished is None for t in cut.timings.values())


def test_closed_loop_keeps_concurrency_and_sends_all() -> None:
    engine = make_engine()
    seen_running = []

    def make(i: int, at: float) -> EngineRequest:
        seen_running.append(engine.stats().num_running)
        return EngineRequest(f"c{i}", 64, 8, [], at)

    result = closed_loop(engine, make, concurrency=3, num_requests=10)
    assert len(result.timings) == 10
    assert all(t.output_tokens == 8 for t in result.timings.values())
    assert max(seen_running) <= 3
