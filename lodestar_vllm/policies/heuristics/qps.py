"""production-stack's ``_qps_routing`` fallback and the arrival-rate monitor it reads.

Mirrors vllm-project/production-stack ``src/vllm_router/routers/routing_logic.py``
(``RoutingInterface._qps_routing``) and ``src/vllm_router/stats/request_stats.py``
(``MovingAverageMonitor``, ``RequestStatsMonitor.on_new_request``), commit a6c01db0.

An engine that has never been sent a request wins outright (first in candidate order); otherwise the one with
the lowest arrival rate over the sliding window (``--request-stats-window``, 60 s by default) wins. In-flight
load is ignored, exactly as upstream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from lodestar_vllm.core.types import InstanceView


class ArrivalRates:
    """Per-url arrival timestamps inside a sliding window (bounded by the window and the pool)."""

    def __init__(self, window: float = 60.0) -> None:
        if window <= 0:
            raise ValueError(f"window must be positive, got {window}")
        self.window = window
        self._arrivals: dict[str, deque[float]] = {}

    def record(self, url: str, now: float) -> None:
        arrivals = self._arrivals.get(url)
        if arrivals is None:
            arrivals = self._arrivals[url] = deque()
        arrivals.append(now)
        self._trim(arrivals, now)

    def qps(self, url: str, now: float) -> float | None:
        """Arrivals per second over the window; None when ``url`` has never been sent a request."""
        arrivals = self._arrivals.get(url)
        if arrivals is None:
            return None
        self._trim(arrivals, now)
        return len(arrivals) / self.window

    def forget(self, urls: Iterable[str]) -> None:
        for url in urls:
            self._arrivals.pop(url, None)

    def _trim(self, arrivals: deque[float], now: float) -> None:
        horizon = now - self.window
        while arrivals and arrivals[0] < horizon:
            arrivals.popleft()


def qps_routing(candidates: Sequence[InstanceView], rates: ArrivalRates, now: float) -> str:
    best_url = candidates[0].url
    best_qps = float("inf")
    for view in candidates:
        qps = rates.qps(view.url, now)
        if qps is None:
            return view.url  # this engine does not have any requests yet
        if qps < best_qps:
            best_qps, best_url = qps, view.url
    return best_url
