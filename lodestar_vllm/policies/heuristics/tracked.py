"""The shared skeleton of the baseline routers: safe dispatch, in-flight accounting, pool bookkeeping.

Each baseline implements ``_choose`` (its upstream rule) and returns a ``Choice``; this class turns it into a
``Decision`` and guarantees the ``RoutingPolicy`` contract: ``route`` never raises and always returns one of the
candidates' urls. Candidates marked unhealthy are skipped while a healthy one exists (production-stack already
passes only awake engines; the simulator may not).

Engines that have not been offered as candidates for ``forget_after`` seconds are forgotten: their in-flight
records and every per-url structure of the policy (``_forget_urls``) are dropped, so memory follows the pool.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from lodestar_vllm.core.types import Decision, DecisionPath, InstanceView, Outcome, RequestInfo
from lodestar_vllm.policies.base import RoutingPolicy
from lodestar_vllm.policies.heuristics.inflight import InFlightTracker
from lodestar_vllm.tokenizer import estimate_tokens

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Choice:
    """A baseline's pick plus what it adds to its own in-flight counters (units are the policy's own)."""

    url: str
    reason: str
    prefill: float = 0.0
    held: float = 0.0


def prompt_tokens(request: RequestInfo) -> int:
    if request.prompt_tokens is not None and request.prompt_tokens >= 0:
        return request.prompt_tokens
    return estimate_tokens(request.prompt_text or "")


class TrackedPolicy(RoutingPolicy):
    name = "tracked"

    def __init__(self, seed: int = 0, inflight_ttl: float = 600.0, forget_after: float = 300.0) -> None:
        if forget_after <= 0:
            raise ValueError(f"forget_after must be positive, got {forget_after}")
        self.seed = seed
        self.rng = random.Random(seed)
        self.inflight = InFlightTracker(ttl=inflight_ttl)
        self.forget_after = forget_after
        self._last_seen: dict[str, float] = {}
        self._next_forget_check = float("-inf")

    # -- the one thing each baseline writes -------------------------------------------------------------
    def _choose(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Choice:
        raise NotImplementedError

    def _forget_urls(self, urls: set[str]) -> None:
        """Drop per-url state of engines that left the pool (override when the policy keeps any)."""

    # -- RoutingPolicy ----------------------------------------------------------------------------------
    def route(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Decision:
        if not candidates:
            raise ValueError("route() needs at least one candidate")  # the caller broke the contract
        pool = [c for c in candidates if c.healthy] or list(candidates)
        self._track_pool(pool, now)
        self.inflight.expire(now)
        try:
            choice = self._choose(request, pool, now)
            if choice.url not in {c.url for c in pool}:
                raise RuntimeError(f"{self.name} chose {choice.url!r}, which is not a candidate")
            path = DecisionPath.HEURISTIC
        except Exception as exc:  # the request path must never fail because a heuristic did
            log.exception("%s failed to choose; falling back to the first candidate", self.name)
            choice = Choice(pool[0].url, f"fallback: {type(exc).__name__}: {exc}")
            path = DecisionPath.FALLBACK
        self.inflight.dispatch(request.request_id, choice.url, now, choice.prefill, choice.held)
        return Decision(url=choice.url, path=path, reason=choice.reason)

    def on_first_token(self, request_id: str, url: str, now: float) -> None:
        self.inflight.first_token(request_id)

    def on_outcome(self, outcome: Outcome) -> None:
        self.inflight.finish(outcome.request_id)

    # -- pool bookkeeping -------------------------------------------------------------------------------
    def _track_pool(self, pool: Sequence[InstanceView], now: float) -> None:
        seen = self._last_seen
        for view in pool:
            seen[view.url] = now
        if now < self._next_forget_check:
            return
        self._next_forget_check = now + self.forget_after / 4
        horizon = now - self.forget_after
        gone = {url for url, t in seen.items() if t < horizon}
        if gone:
            for url in gone:
                del seen[url]
            self.inflight.forget(gone)
            self._forget_urls(gone)
