"""``llmd-default`` and ``llmd-weighted``: llm-d's endpoint picker (Gateway API Inference Extension).

Both read the router-side approximate prefix index (``llmd_index.ApproxPrefixIndex``) and end in the
``max-score-picker`` (candidates shuffled, then stably sorted by score, highest first).

``llmd-default`` (prefix-affinity filter + token-load scorer), mirroring llm-d/llm-d-inference-scheduler
``pkg/epp/framework/plugins/scheduling/filter/prefixcacheaffinity/plugin.go`` (with the in-flight-tokens load
gate of commit 6d27e2e8), ``scheduling/scorer/tokenload/token_load.go`` and
``requestcontrol/dataproducer/inflightload/{producer.go,token_estimator.go}`` (uncached-input accounting of
commit cd984098):

- filter: with probability 0.01 keep everyone (exploration); else keep the "sticky" endpoints whose prefix score
  is >= 0.8; if none is sticky keep everyone. Saturation override: if the least-loaded sticky endpoint has more
  than ``max_tokens_in_flight_penalty`` in-flight tokens above the least-loaded non-sticky one, keep everyone.
  (Upstream also has a predicted-TTFT gate; without a latency predictor it never fires, as here. Upstream leaves
  the token gate off by default; we set 65536 tokens, about two long requests.)
- score = 1 - min(1, in-flight tokens / 4194304) (``queueThresholdTokens``);
- in-flight tokens per request = its uncached prompt tokens at the chosen endpoint + round(1.5 x prompt tokens)
  (``OutputRatio``), held until the request ends.

``llmd-weighted`` (the chart's default profile when no predictor runs), mirroring
``config/charts/epplib/templates/_config.yaml`` and ``scheduling/scorer/{queuedepth/queue.go,
kvcacheutilization/kvcache_utilization.go,prefix/plugin.go,nohitlru/no_hit_lru.go}``: weighted sum of
queue (2: min-max normalised scraped waiting queue, all equal -> 1), kv-usage (2: 1 - scraped KV usage),
prefix (3: matched / total blocks) and no-hit LRU (2: for a request no endpoint has cached, endpoints never sent
a cold request score highest, then least recently sent one; otherwise 0.5 for all; LRU of 1024 endpoints).
Missing metrics read as zero, as Go's zero-valued metrics do.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from lodestar_vllm.core.types import InstanceView, RequestInfo
from lodestar_vllm.policies.heuristics.llmd_index import ApproxPrefixIndex
from lodestar_vllm.policies.heuristics.tracked import Choice, TrackedPolicy, prompt_tokens


class _PrefixView:
    """One request's prefix-match facts (what llm-d's PrefixCacheMatchInfo carries)."""

    __slots__ = ("hashes", "block_size", "matches")

    def __init__(self, hashes: list[int], block_size: int, matches: dict[str, int]) -> None:
        self.hashes = hashes
        self.block_size = block_size
        self.matches = matches

    @property
    def total(self) -> int:
        return len(self.hashes)

    def score(self, url: str) -> float:
        return self.matches.get(url, 0) / self.total if self.hashes else 0.0


class _LlmdPolicy(TrackedPolicy):
    def __init__(
        self,
        seed: int = 0,
        block_size_tokens: int = 16,
        max_prefix_blocks: int = 256,
        lru_capacity_per_server: int = 31250,
        auto_tune: bool = True,
        **kwargs: float,
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        self.index = ApproxPrefixIndex(block_size_tokens, max_prefix_blocks, lru_capacity_per_server, auto_tune)

    def _prefix(self, request: RequestInfo, candidates: Sequence[InstanceView]) -> _PrefixView:
        block_size = self.index.block_size(candidates)
        hashes = self.index.hashes(request.prompt_text or "", request.model, block_size)
        return _PrefixView(hashes, block_size, self.index.match(hashes))

    def _max_score(self, scores: dict[str, float]) -> str:
        urls = list(scores)
        self.rng.shuffle(urls)  # random tie break, as the picker's ShuffleScoredEndpoints
        urls.sort(key=lambda url: -scores[url])
        return urls[0]

    def _record(self, prefix: _PrefixView, url: str, candidates: Sequence[InstanceView]) -> None:
        if prefix.hashes:
            view = next((c for c in candidates if c.url == url), None)
            self.index.add(prefix.hashes, url, view)

    def _forget_urls(self, urls: set[str]) -> None:
        self.index.forget(urls)


class LlmdDefaultPolicy(_LlmdPolicy):
    name = "llmd-default"

    def __init__(
        self,
        seed: int = 0,
        affinity_threshold: float = 0.8,
        exploration_probability: float = 0.01,
        max_tokens_in_flight_penalty: float = 65536,
        queue_threshold_tokens: float = 4194304,
        output_ratio: float = 1.5,
        **kwargs: float,
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        if affinity_threshold > 1.0 or not 0.0 <= exploration_probability <= 1.0:
            raise ValueError("affinity_threshold must be <= 1 and exploration_probability in [0, 1]")
        if max_tokens_in_flight_penalty < 0 or queue_threshold_tokens <= 0:
            raise ValueError("max_tokens_in_flight_penalty must be >= 0 and queue_threshold_tokens > 0")
        self.affinity_threshold = affinity_threshold
        self.exploration_probability = exploration_probability
        self.max_tokens_in_flight_penalty = max_tokens_in_flight_penalty
        self.queue_threshold_tokens = queue_threshold_tokens
        self.output_ratio = output_ratio

    def _choose(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Choice:
        prefix = self._prefix(request, candidates)
        kept, why = self._affinity_filter(prefix, candidates)
        scores = {}
        for view in kept:
            tokens = self.inflight.load(view.url).held
            scores[view.url] = 1.0 if tokens <= 0 else 1.0 - min(tokens, self.queue_threshold_tokens) / (
                self.queue_threshold_tokens
            )
        url = self._max_score(scores)
        self._record(prefix, url, candidates)
        input_tokens = prompt_tokens(request)
        indexed = prefix.total * prefix.block_size
        uncached = max(indexed - prefix.matches.get(url, 0) * prefix.block_size, 0) + max(input_tokens - indexed, 0)
        output = int(input_tokens * self.output_ratio + 0.5)
        return Choice(url, f"{why}; token load score {scores[url]:.3f}", held=uncached + output)

    def _affinity_filter(
        self, prefix: _PrefixView, candidates: Sequence[InstanceView]
    ) -> tuple[Sequence[InstanceView], str]:
        if len(candidates) <= 1 or self.affinity_threshold <= 0:
            return candidates, "no affinity filter"
        if self.rng.random() < self.exploration_probability:
            return candidates, "affinity exploration: all kept"
        sticky = [c for c in candidates if prefix.score(c.url) >= self.affinity_threshold]
        if not sticky:
            return candidates, "no sticky endpoint"
        if self.max_tokens_in_flight_penalty > 0 and len(sticky) < len(candidates):
            sticky_urls = {c.url for c in sticky}
            best_sticky = min(self.inflight.load(c.url).held for c in sticky)
            best_other = min(self.inflight.load(c.url).held for c in candidates if c.url not in sticky_urls)
            if best_sticky - best_other > self.max_tokens_in_flight_penalty:
                return candidates, "sticky endpoints saturated: all kept"
        return sticky, f"{len(sticky)} sticky endpoint(s)"


class LlmdWeightedPolicy(_LlmdPolicy):
    name = "llmd-weighted"

    def __init__(
        self,
        seed: int = 0,
        queue_weight: float = 2.0,
        kv_weight: float = 2.0,
        prefix_weight: float = 3.0,
        no_hit_lru_weight: float = 2.0,
        lru_size: int = 1024,
        **kwargs: float,
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        if lru_size <= 0:
            raise ValueError(f"lru_size must be positive, got {lru_size}")
        self.weights = (queue_weight, kv_weight, prefix_weight, no_hit_lru_weight)
        self.lru_size = lru_size
        self._cold_lru: OrderedDict[str, None] = OrderedDict()  # oldest first

    def _choose(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Choice:
        prefix = self._prefix(request, candidates)
        waiting = {c.url: (c.metrics.num_waiting if c.metrics is not None else 0.0) for c in candidates}
        lo, hi = min(waiting.values()), max(waiting.values())
        cold = not any(prefix.matches.get(c.url, 0) > 0 for c in candidates)
        lru_scores = self._no_hit_lru_scores(candidates) if cold else None
        w_queue, w_kv, w_prefix, w_lru = self.weights
        scores = {}
        for view in candidates:
            queue = 1.0 if hi == lo else (hi - waiting[view.url]) / (hi - lo)
            kv = 1.0 - (view.metrics.kv_cache_usage if view.metrics is not None else 0.0)
            lru = lru_scores[view.url] if lru_scores is not None else 0.5
            scores[view.url] = w_queue * queue + w_kv * kv + w_prefix * prefix.score(view.url) + w_lru * lru
        url = self._max_score(scores)
        self._record(prefix, url, candidates)
        if cold:
            self._cold_lru.pop(url, None)
            self._cold_lru[url] = None
            while len(self._cold_lru) > self.lru_size:
                self._cold_lru.popitem(last=False)
        return Choice(url, f"weighted score {scores[url]:.3f}" + (" (cold request)" if cold else ""))

    def _no_hit_lru_scores(self, candidates: Sequence[InstanceView]) -> dict[str, float]:
        total = len(candidates)
        if total == 1:
            return {candidates[0].url: 1.0}
        position = {url: i for i, url in enumerate(self._cold_lru)}
        never = [c.url for c in candidates if c.url not in position]
        scores = {url: 1.0 - i / (total - 1) for i, url in enumerate(never)}
        for view in candidates:
            if view.url in position:
                rank = len(never) + position[view.url]
                scores[view.url] = max(1.0 - rank / (total - 1), 0.0)
        return scores

    def _forget_urls(self, urls: set[str]) -> None:
        super()._forget_urls(urls)
        for url in urls:
            self._cold_lru.pop(url, None)
