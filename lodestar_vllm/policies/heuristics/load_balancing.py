"""Load-only baselines: ``least-request``, ``least-kv``, ``power-of-two``.

- ``least-request`` mirrors vllm-project/aibrix ``pkg/plugins/gateway/algorithms/least_request.go``
  (``selectTargetPodWithLeastRequestCount``): fewest router-tracked running requests, random among ties.
- ``least-kv`` mirrors vllm-project/aibrix ``pkg/plugins/gateway/algorithms/least_kv_cache.go`` in spirit: the
  lowest scraped ``kv_cache_usage`` wins; ties (e.g. every engine idle, or metrics not scraped yet, read as 0)
  go to the fewest router-tracked in-flight requests, then random.
- ``power-of-two`` mirrors sgl-project/sglang ``sgl-router/src/policies/power_of_two.rs`` (also in
  vllm-project/router): two distinct random candidates, the one with fewer in-flight requests wins (the first
  drawn on a tie).
"""

from __future__ import annotations

from collections.abc import Sequence

from lodestar_vllm.core.types import InstanceView, RequestInfo
from lodestar_vllm.policies.heuristics.tracked import Choice, TrackedPolicy


class LeastRequestPolicy(TrackedPolicy):
    name = "least-request"

    def _choose(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Choice:
        url = least_request(candidates, self)
        return Choice(url, f"least in-flight ({self.inflight.requests(url)})")


def least_request(candidates: Sequence[InstanceView], policy: TrackedPolicy) -> str:
    counts = [(policy.inflight.requests(c.url), c.url) for c in candidates]
    fewest = min(n for n, _ in counts)
    return policy.rng.choice([url for n, url in counts if n == fewest])


class LeastKvPolicy(TrackedPolicy):
    name = "least-kv"

    def _choose(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Choice:
        keyed = [
            (c.metrics.kv_cache_usage if c.metrics is not None else 0.0, self.inflight.requests(c.url), c.url)
            for c in candidates
        ]
        best = min(k[:2] for k in keyed)
        url = self.rng.choice([k[2] for k in keyed if k[:2] == best])
        return Choice(url, f"least kv usage ({best[0]:.3f}), in-flight {best[1]}")


class PowerOfTwoPolicy(TrackedPolicy):
    name = "power-of-two"

    def _choose(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Choice:
        if len(candidates) == 1:
            return Choice(candidates[0].url, "only candidate")
        i, j = self.rng.sample(range(len(candidates)), 2)
        a, b = candidates[i].url, candidates[j].url
        load_a, load_b = self.inflight.requests(a), self.inflight.requests(b)
        url = a if load_a <= load_b else b
        return Choice(url, f"power of two: {load_a} vs {load_b} in flight")
