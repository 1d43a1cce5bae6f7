"""``roundrobin``: production-stack's RoundRobinRouter.

Mirrors vllm-project/production-stack ``src/vllm_router/routers/routing_logic.py`` (``RoundRobinRouter``),
commit a6c01db0: one request counter, candidates sorted by url, ``sorted[counter % n]``. The counter is not reset
when the pool changes (upstream's TODO notes the resulting imperfection; we keep it).
"""

from __future__ import annotations

from collections.abc import Sequence

from lodestar_vllm.core.types import InstanceView, RequestInfo
from lodestar_vllm.policies.heuristics.tracked import Choice, TrackedPolicy


class RoundRobinPolicy(TrackedPolicy):
    name = "roundrobin"

    def __init__(self, seed: int = 0, **kwargs: float) -> None:
        super().__init__(seed=seed, **kwargs)
        self._counter = 0
        self._sorted_key: tuple[str, ...] = ()
        self._sorted: list[str] = []

    def _choose(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Choice:
        key = tuple(c.url for c in candidates)
        if key != self._sorted_key:
            self._sorted_key, self._sorted = key, sorted(key)
        url = self._sorted[self._counter % len(self._sorted)]
        self._counter += 1
        return Choice(url, "round robin")
