"""Drive one engine in virtual time over a list of arrivals and report each request's timings.

The discrete-event loop: requests arriving by ``now`` are added, then one step runs from ``now`` and its
outputs land at ``now + duration``; an idle engine jumps to the next arrival. Used by tests, the calibration
and ``bench-engine``; the multi-engine cluster simulator has its own loop over the same ``EngineCore`` API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lodestar_vllm.sim.engine import EngineCore, EngineRequest


@dataclass(slots=True)
class RequestTiming:
    request_id: str
    arrival: float
    prompt_len: int
    first_token: float | None = None
    finished: float | None = None
    output_tokens: int = 0
    cached_tokens: int = 0

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.arrival

    @property
    def e2e(self) -> float | None:
        return None if self.finished is None else self.finished - self.arrival

    @property
    def itl(self) -> float | None:
        """Mean time between output tokens after the first."""
        if self.finished is None or self.first_token is None or self.output_tokens < 2:
            return None
        return (self.finished - self.first_token) / (self.output_tokens - 1)


@dataclass(slots=True)
class DriverResult:
    timings: dict[str, RequestTiming]
    steps: int
    end_time: float


def run_virtual(
    engine: EngineCore,
    arrivals: Iterable[tuple[float, EngineRequest]],
    max_steps: int = 10_000_000,
    until: float | None = None,
) -> DriverResult:
    """Run until every request finished (or ``max_steps`` / virtual time ``until`` is reached)."""
    pending = sorted(arrivals, key=lambda a: a[0])
    timings: dict[str, RequestTiming] = {}
    now = 0.0
    i = 0
    steps = 0
    n = len(pending)
    while steps < max_steps:
        while i < n and pending[i][0] <= now:
            t, req = pending[i]
            engine.add_request(req)
            timings[req.request_id] = RequestTiming(req.request_id, t, req.prompt_len)
            i += 1
        if not engine.has_unfinished():
            if i >= n:
                break
            now = pending[i][0]
            continue
        if until is not None and now >= until:
            break
        result = engine.step(now)
        steps += 1
        if result.duration <= 0.0:  # nothing schedulable: wait for the next arrival
            if i >= n:
                break
            now = max(now, pending[i][0])
            continue
        done = now + result.duration
        for rid in result.emitted:
            timings[rid].output_tokens += 1
        for rid in result.first_token:
            rec = timings[rid]
            rec.first_token = done
            rec.cached_tokens = engine.cached_tokens(rid)
        for rid, _reason in result.finished:
            timings[rid].finished = done
        now = done
    return DriverResult(timings, steps, now)


def closed_loop(
    engine: EngineCore,
    make_request: Callable[[int, float], EngineRequest],  # (index, arrival time) -> request
    concurrency: int,
    num_requests: int,
    max_steps: int = 10_000_000,
) -> DriverResult:
    """``concurrency`` clients, each sending its next request when the previous one finished (benchmarks
    such as "concurrency 1 vs 8" are measured this way)."""
    timings: dict[str, RequestTiming] = {}
    now = 0.0
    sent = 0
    steps = 0

    def send(at: float) -> None:
        nonlocal sent
        req = make_request(sent, at)
        engine.add_request(req)
        timings[req.request_id] = RequestTiming(req.request_id, at, req.prompt_len)
        sent += 1

    for _ in range(min(concurrency, num_requests)):
        send(now)
    while engine.has_unfinished() and steps < max_steps:
        result = engine.step(now)
        steps += 1
        if result.duration <= 0.0:
            break
        done = now + result.duration
        for rid in result.emitted:
            timings[rid].output_tokens += 1
        for rid in result.first_token:
            timings[rid].first_token = done
            timings[rid].cached_tokens = engine.cached_tokens(rid)
        now = done
        for rid, _reason in result.finished:
            timings[rid].finished = done
            if sent < num_requests:
                send(done)
    return DriverResult(timings, steps, now)
