"""Outlier ejection: engines that keep failing are marked unhealthy for a while, for any wrapped policy.

Why: a failed attempt has no TTFT to learn from, and it clears the engine's in-flight count at once, so an
engine that answers 500 within milliseconds (or refuses connections) looks idle and fast to every load-aware
rule. Envoy's outlier detection is the model: after ``consecutive_failures`` failed attempts in a row the
engine is ejected for ``base_ejection_s`` x (times ejected), capped at ``max_ejection_s``; when that expires
it gets traffic again (a success resets its count; one more failure ejects it again, for longer).

Ejection only flips ``InstanceView.healthy``; policies already prefer healthy candidates and fall back to all
of them when none is healthy, so an all-failing fleet is still served. Composed as a filter in front of a
policy (llm-d style), so the learned router and every baseline get it without a change of their own.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from prometheus_client import REGISTRY, Counter

from lodestar_vllm.core.types import Decision, InstanceView, Outcome, OutcomeStatus, RequestInfo
from lodestar_vllm.metrics import get_or_create
from lodestar_vllm.policies.base import RoutingPolicy

log = logging.getLogger("lodestar_vllm.outliers")


@dataclasses.dataclass(slots=True)
class _EngineRecord:
    consecutive_failures: int = 0
    times_ejected: int = 0
    ejected_until: float = float("-inf")
    last_seen: float = 0.0


class OutlierEjection(RoutingPolicy):
    def __init__(
        self,
        inner: RoutingPolicy,
        consecutive_failures: int = 3,
        base_ejection_s: float = 5.0,
        max_ejection_s: float = 60.0,
        max_engines: int = 10_000,
    ) -> None:
        if consecutive_failures < 1 or base_ejection_s <= 0 or max_ejection_s < base_ejection_s:
            raise ValueError("outlier ejection needs consecutive_failures >= 1 and 0 < base <= max ejection")
        self.inner = inner
        self.consecutive_failures = consecutive_failures
        self.base_ejection_s = base_ejection_s
        self.max_ejection_s = max_ejection_s
        self.max_engines = max_engines
        self._engines: dict[str, _EngineRecord] = {}
        self.ejections_total = 0
        self._metric = get_or_create(REGISTRY, Counter, "lodestar_engine_ejections_total",
                                     "Engines ejected after consecutive failed attempts")

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    def __getattr__(self, attr: str) -> Any:
        # status(), explain(), checkpoints, set_shadow()... belong to the wrapped policy.
        return getattr(self.inner, attr)

    def ejected(self, now: float) -> list[str]:
        return sorted(url for url, rec in self._engines.items() if rec.ejected_until > now)

    def route(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Decision:
        views = list(candidates)
        for i, view in enumerate(views):
            rec = self._engines.get(view.url)
            if rec is not None and rec.ejected_until > now and view.healthy:
                views[i] = dataclasses.replace(view, healthy=False)
        return self.inner.route(request, views, now)

    def on_first_token(self, request_id: str, url: str, now: float) -> None:
        self.inner.on_first_token(request_id, url, now)

    def on_outcome(self, outcome: Outcome) -> None:
        self._observe(outcome)
        self.inner.on_outcome(outcome)

    def close(self) -> None:
        self.inner.close()

    def _observe(self, outcome: Outcome) -> None:
        now = outcome.finished_at if outcome.finished_at is not None else outcome.dispatched_at
        rec = self._engines.get(outcome.url)
        if rec is None:
            if len(self._engines) >= self.max_engines:  # bounded: forget the engine seen longest ago
                oldest = min(self._engines, key=lambda u: self._engines[u].last_seen)
                del self._engines[oldest]
            rec = self._engines[outcome.url] = _EngineRecord()
        rec.last_seen = now
        if outcome.status is OutcomeStatus.OK:
            rec.consecutive_failures = 0
            if rec.ejected_until <= now:  # healthy again: later ejections start short again
                rec.times_ejected = max(0, rec.times_ejected - 1)
            return
        if outcome.status is not OutcomeStatus.FAILED:  # a client abort says nothing about the engine
            return
        rec.consecutive_failures += 1
        if rec.consecutive_failures >= self.consecutive_failures and rec.ejected_until <= now:
            rec.times_ejected += 1
            duration = min(self.max_ejection_s, self.base_ejection_s * rec.times_ejected)
            rec.ejected_until = now + duration
            rec.consecutive_failures = 0
            self.ejections_total += 1
            self._metric.inc()
            log.warning(
                "lodestar: engine %s ejected for %.0f s after %d failed attempts in a row (%s)",
                outcome.url, duration, self.consecutive_failures, outcome.error or outcome.http_status,
                extra={"event": "engine_ejected", "engine": outcome.url, "duration_s": duration,
                       "times_ejected": rec.times_ejected},
            )
