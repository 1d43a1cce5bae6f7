"""``dynamo-cost``: NVIDIA Dynamo's KV router cost function, in its approximate (no KV events) mode.

Mirrors ai-dynamo/dynamo ``docs/router/kv_cache_routing.md`` (cost section) and the selector it describes
(``lib/llm/src/kv_router/scheduler.rs`` ``DefaultWorkerSelector``; ``ApproxKvIndexer`` when ``--no-kv-events``):

    cost(worker) = overlap_score_weight x prefill_blocks + decode_blocks

- ``prefill_blocks`` = (router-tracked uncached prefill tokens in flight at the worker + this prompt's tokens
  not covered by the worker's cached prefix) / block size; a request's prefill tokens are released at its
  first token, as Dynamo's ``mark_prefill_completed``;
- ``decode_blocks`` = blocks of the worker's active requests (router-tracked, released at the end; Dynamo also
  counts output blocks as they grow and de-duplicates shared prefix blocks, which a router without token
  streaming counts cannot);
- the overlap comes from an approximate index of the blocks this router sent to each worker, expiring 120 s
  after they were last sent (``ApproxKvIndexer`` TTL), capped at ``max_blocks_per_worker`` for bounded memory;
- lowest cost wins (``--router-temperature`` 0; ties at random); with a temperature > 0 the worker is sampled
  from a softmax over the negated costs normalised to [0, 1].

Block size: the engine's reported block size when scraped, else 16 (vLLM's default).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

from lodestar_vllm.core.types import InstanceView, RequestInfo
from lodestar_vllm.policies.heuristics.blocks import chained_hashes
from lodestar_vllm.policies.heuristics.tracked import Choice, TrackedPolicy, prompt_tokens
from lodestar_vllm.tokenizer import CHARS_PER_TOKEN


class ApproxKvIndex:
    """Per-worker block hashes with last-sent times; TTL expiry plus a per-worker size cap."""

    def __init__(self, ttl: float = 120.0, max_blocks_per_worker: int = 1 << 20) -> None:
        if ttl <= 0 or max_blocks_per_worker <= 0:
            raise ValueError("ttl and max_blocks_per_worker must be positive")
        self.ttl = ttl
        self.max_blocks_per_worker = max_blocks_per_worker
        self._blocks: dict[str, OrderedDict[int, float]] = {}

    def overlap(self, hashes: list[int], worker: str, now: float) -> int:
        """How many leading blocks of the prompt ``worker`` holds."""
        blocks = self._blocks.get(worker)
        if not blocks:
            return 0
        self._expire(blocks, now)
        depth = 0
        for h in hashes:
            if h not in blocks:
                break
            depth += 1
        return depth

    def add(self, hashes: list[int], worker: str, now: float) -> None:
        blocks = self._blocks.get(worker)
        if blocks is None:
            blocks = self._blocks[worker] = OrderedDict()
        for h in hashes:
            blocks[h] = now
            blocks.move_to_end(h)
        while len(blocks) > self.max_blocks_per_worker:
            blocks.popitem(last=False)

    def forget(self, workers: set[str]) -> None:
        for worker in workers:
            self._blocks.pop(worker, None)

    def size(self) -> int:
        return sum(len(b) for b in self._blocks.values())

    def _expire(self, blocks: OrderedDict[int, float], now: float) -> None:
        horizon = now - self.ttl
        while blocks:
            h, sent = next(iter(blocks.items()))
            if sent >= horizon:
                break
            del blocks[h]


class DynamoCostPolicy(TrackedPolicy):
    name = "dynamo-cost"

    def __init__(
        self,
        seed: int = 0,
        overlap_score_weight: float = 1.0,
        temperature: float = 0.0,
        block_size: int = 16,
        ttl: float = 120.0,
        max_blocks_per_worker: int = 1 << 20,
        **kwargs: float,
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        if block_size <= 0 or temperature < 0:
            raise ValueError("block_size must be positive and temperature >= 0")
        self.overlap_score_weight = overlap_score_weight
        self.temperature = temperature
        self.block_size = block_size
        self.index = ApproxKvIndex(ttl, max_blocks_per_worker)

    def costs(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> dict[str, float]:
        """Per-candidate cost (also used by tests to check the arithmetic)."""
        return self._costs(request, candidates, now)[0]

    def _choose(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Choice:
        costs, hashes, block_size, uncached = self._costs(request, candidates, now)
        url = self._select(costs)
        self.index.add(hashes, url, now)
        tokens = prompt_tokens(request)
        return Choice(
            url,
            f"lowest cost {costs[url]:.2f} blocks",
            prefill=uncached[url],
            held=math.ceil(tokens / block_size),
        )

    def _costs(
        self, request: RequestInfo, candidates: Sequence[InstanceView], now: float
    ) -> tuple[dict[str, float], list[int], int, dict[str, float]]:
        block_size = self._block_size(candidates)
        hashes = chained_hashes(request.prompt_text or "", block_size * CHARS_PER_TOKEN)
        tokens = prompt_tokens(request)
        costs: dict[str, float] = {}
        uncached: dict[str, float] = {}
        for view in candidates:
            overlap = self.index.overlap(hashes, view.url, now)
            uncached[view.url] = max(tokens - overlap * block_size, 0)
            load = self.inflight.load(view.url)
            prefill_blocks = (load.prefill + uncached[view.url]) / block_size
            costs[view.url] = self.overlap_score_weight * prefill_blocks + load.held
        return costs, hashes, block_size, uncached

    def _select(self, costs: dict[str, float]) -> str:
        urls = list(costs)
        if self.temperature <= 0:
            best = min(costs.values())
            return self.rng.choice([u for u in urls if costs[u] == best])
        lo, hi = min(costs.values()), max(costs.values())
        span = hi - lo or 1.0
        logits = [-(costs[u] - lo) / span / self.temperature for u in urls]
        top = max(logits)
        weights = [math.exp(x - top) for x in logits]
        return self.rng.choices(urls, weights=weights, k=1)[0]

    def _block_size(self, candidates: Sequence[InstanceView]) -> int:
        for view in candidates:
            if view.metrics is not None and view.metrics.block_size:
                return view.metrics.block_size
        return self.block_size

    def _forget_urls(self, urls: set[str]) -> None:
        self.index.forget(urls)
