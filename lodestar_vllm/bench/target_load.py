"""Find the load at which routing matters: the rate scale where the best heuristic's mean TTFT reaches
``factor`` x its idle TTFT (idle = the same workload at a very low rate). Geometric bracketing, then bisection."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lodestar_vllm.bench.runner import run_policies
from lodestar_vllm.bench.scenario import Scenario
from lodestar_vllm.sim.cluster import EngineFactory, default_engine_factory

IDLE_RATE_SCALE = 0.02
IDLE_MAX_REQUESTS = 150


@dataclass(frozen=True, slots=True)
class LoadPoint:
    rate_scale: float
    best_policy: str
    ttft_mean_s: float
    ratio_to_idle: float


def best_mean(scenario: Scenario, heuristics: Sequence[str], jobs: int,
              engine_factory: EngineFactory = default_engine_factory) -> tuple[str, float]:
    results = run_policies(scenario, heuristics, jobs=jobs, progress=False, engine_factory=engine_factory)
    scored = [(r["ttft_mean_s"], name) for name, r in results.items() if r.get("ttft_mean_s") is not None]
    if not scored:
        raise RuntimeError("no heuristic completed a request")
    value, name = min(scored)
    return name, value


def find_target_load(
    scenario: Scenario,
    heuristics: Sequence[str],
    *,
    factor: float = 3.0,
    jobs: int = 2,
    refine_steps: int = 3,
    max_doublings: int = 8,
    log: Callable[[str], None] = print,
    engine_factory: EngineFactory = default_engine_factory,
) -> tuple[float, float, list[LoadPoint]]:
    """Returns (rate_scale reaching the target, idle TTFT, every point evaluated)."""
    idle_scenario = scenario.with_(rate_scale=IDLE_RATE_SCALE, duration=None,
                                   max_requests=min(IDLE_MAX_REQUESTS, scenario.max_requests or IDLE_MAX_REQUESTS))
    _name, idle = best_mean(idle_scenario, heuristics, jobs, engine_factory)
    log(f"idle TTFT (rate scale {IDLE_RATE_SCALE}, {idle_scenario.max_requests} requests): {idle:.4f} s; "
        f"target {factor:g}x = {factor * idle:.4f} s")
    points: list[LoadPoint] = []

    def evaluate(rate: float) -> float:
        name, mean = best_mean(scenario.with_(rate_scale=rate), heuristics, jobs, engine_factory)
        point = LoadPoint(rate, name, mean, mean / idle)
        points.append(point)
        log(f"  rate scale {rate:8.4f}: best heuristic {name:<20} TTFT mean {mean:8.4f} s = {mean / idle:6.2f}x idle")
        return point.ratio_to_idle

    lo, hi = None, None
    rate = scenario.rate_scale
    for _ in range(max_doublings + 1):
        if evaluate(rate) >= factor:
            hi = rate
            if lo is not None:
                break
            rate /= 2
        else:
            lo = rate
            if hi is not None:
                break
            rate *= 2
    if hi is None:
        log(f"target not reached up to rate scale {rate:g}")
        return rate, idle, points
    if lo is None:
        log(f"target already exceeded at rate scale {hi:g}")
        return hi, idle, points
    for _ in range(refine_steps):
        mid = math.sqrt(lo * hi)
        if evaluate(mid) >= factor:
            hi = mid
        else:
            lo = mid
    log(f"=> rate scale {hi:.4f} reaches {factor:g}x idle TTFT")
    return hi, idle, points
