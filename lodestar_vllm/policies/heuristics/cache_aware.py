"""``cache-aware``: SGLang / vllm-project/router ``cache_aware`` policy.

Mirrors sgl-project/sglang ``sgl-router/src/policies/cache_aware.rs`` and ``sgl-router/src/policies/mod.rs``
(``CacheAwareConfig::default``), commit 026f853b; vllm-project/router carries the same policy:

1. Load = router-tracked in-flight requests per worker.
2. Imbalanced when ``max - min > 32`` and ``max > 1.1 x min``: route to the least-loaded worker (first on a
   tie) and still insert the text into the tree for that worker.
3. Otherwise match the text against the approximate radix tree; if matched characters / text characters
   > 0.5 route to the tenant of the deepest matched node, else to the tenant with the fewest characters
   (most free cache). Insert the text for the chosen worker.
4. Every ``eviction_interval`` seconds each tenant is trimmed to ``max_tree_size`` characters by LRU leaves.

Thresholds are the library defaults (0.5 / 32 / 1.1 / 30 s); ``max_tree_size`` defaults to the CLI's 2^26
characters (the library default of 10000 characters would keep under one 50 KB prompt per worker).
"""

from __future__ import annotations

from collections.abc import Sequence

from lodestar_vllm.core.types import InstanceView, RequestInfo
from lodestar_vllm.policies.heuristics.radix_tree import RadixTree
from lodestar_vllm.policies.heuristics.tracked import Choice, TrackedPolicy


class CacheAwarePolicy(TrackedPolicy):
    name = "cache-aware"

    def __init__(
        self,
        seed: int = 0,
        cache_threshold: float = 0.5,
        balance_abs_threshold: int = 32,
        balance_rel_threshold: float = 1.1,
        eviction_interval: float = 30.0,
        max_tree_size: int = 1 << 26,
        **kwargs: float,
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        if eviction_interval <= 0 or max_tree_size <= 0:
            raise ValueError("eviction_interval and max_tree_size must be positive")
        self.cache_threshold = cache_threshold
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold
        self.eviction_interval = eviction_interval
        self.max_tree_size = max_tree_size
        self.tree = RadixTree()
        self._next_eviction: float | None = None

    def _choose(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Choice:
        if self._next_eviction is None:
            self._next_eviction = now + self.eviction_interval
        elif now >= self._next_eviction:
            self.tree.evict_tenant_by_size(self.max_tree_size)
            self._next_eviction = now + self.eviction_interval
        for view in candidates:
            if view.url not in self.tree.char_count:
                self.tree.add_tenant(view.url)  # upstream registers each worker with insert("", url)

        text = request.prompt_text or ""
        loads = [self.inflight.requests(c.url) for c in candidates]
        hi, lo = max(loads), min(loads)
        if hi - lo > self.balance_abs_threshold and hi > lo * self.balance_rel_threshold:
            url = candidates[loads.index(lo)].url
            if text:
                self.tree.insert(text, url)
            return Choice(url, f"imbalanced (max {hi}, min {lo}): shortest queue")

        matched, tenant = self.tree.prefix_match(text)
        rate = matched / len(text) if text else 0.0
        if rate > self.cache_threshold:
            url, reason = tenant, f"cache hit: match rate {rate:.2f}"
        else:
            url, reason = self.tree.smallest_tenant(), f"cache miss (match rate {rate:.2f}): smallest tree"
        if url not in {c.url for c in candidates}:
            # Upstream drops a tenant that is no longer a worker and falls back to the first healthy one.
            if url is not None:
                self.tree.remove_tenant(url)
            url, reason = candidates[0].url, f"{reason}; chosen worker gone: first candidate"
        self.tree.insert(text, url)
        return Choice(url, reason)

    def _forget_urls(self, urls: set[str]) -> None:
        for url in urls:
            self.tree.remove_tenant(url)
