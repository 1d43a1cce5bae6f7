"""``oracle-greedy``: route each request to the engine with the lowest TRUE estimated TTFT.

Not deployable: it reads engine internals through the simulator's TTFT probe (``engine.estimate_ttft`` on the
real queues and prefix cache, scaled by the engine's current speed). It is the "limit" reference in benchmarks:
greedy per request, so it is not a global optimum, but it knows what no production router can know.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol

from lodestar_vllm.core.types import Decision, DecisionPath, InstanceView, RequestInfo
from lodestar_vllm.policies.base import RoutingPolicy


class TtftProbe(Protocol):
    def estimate_ttft(self, url: str, request: RequestInfo, now: float) -> float | None: ...


class OracleGreedyPolicy(RoutingPolicy):
    name: ClassVar[str] = "oracle-greedy"

    def __init__(self, probe: TtftProbe, *, seed: int = 0) -> None:
        self._probe = probe
        self.seed = seed  # no randomness: ties go to the earliest candidate

    def route(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Decision:
        best_url = candidates[0].url
        best: float | None = None
        for view in candidates:
            if not view.healthy:
                continue
            try:
                est = self._probe.estimate_ttft(view.url, request, now)
            except Exception:  # a probe failure must not break routing
                est = None
            if est is not None and (best is None or est < best):
                best, best_url = est, view.url
        if best is None:
            return Decision(best_url, DecisionPath.FALLBACK, None, "no estimate available: first candidate")
        return Decision(best_url, DecisionPath.MODEL, best, "argmin of true estimated TTFT")
