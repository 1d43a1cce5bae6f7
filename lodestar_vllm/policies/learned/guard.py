"""The locality guard: when the fleet's KV cache is saturated, keep a hot shared prefix on a few engines.

Greedy per-request choices scatter a widely shared prefix over every engine once load evens out; with full
caches each copy evicts others' prefixes and everyone recomputes. A prefix group (the hash of the prompt's
first blocks) seen often in the recent window is hot; while the mean scraped KV usage is above a threshold,
requests of a hot group may only go to ``k`` engines picked by rendezvous hashing (stable as engines come and
go, and the same on every router replica).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
import xxhash

from lodestar_vllm.core.features import CandidateFeatures

# Blocks of the prompt that name its prefix group (with 32-token blocks: the first 128 tokens).
GROUP_BLOCKS = 4
# The guard only matters for prompts that are mostly shared prefix.
MIN_SHARED_FRACTION = 0.3


class LocalityGuard:
    def __init__(self, kv_threshold: float, candidates: int, hot_count: int, window: int) -> None:
        self.kv_threshold = kv_threshold
        self.k = candidates
        self.hot_count = hot_count
        self._window: deque[int] = deque(maxlen=window)
        self._counts: dict[int, int] = {}
        self.activations = 0

    @staticmethod
    def group_of(hashes: Sequence[int]) -> int | None:
        if not hashes:
            return None
        return hashes[min(len(hashes), GROUP_BLOCKS) - 1]

    def observe(self, group: int | None) -> None:
        """Count a dispatched request's group in the sliding window (bounded by the window length)."""
        if group is None:
            return
        if len(self._window) == self._window.maxlen:
            old = self._window[0]
            left = self._counts[old] - 1
            if left:
                self._counts[old] = left
            else:
                del self._counts[old]
        self._window.append(group)
        self._counts[group] = self._counts.get(group, 0) + 1

    def allowed(self, group: int | None, feats: CandidateFeatures) -> np.ndarray | None:
        """A mask of the engines this request may use, or None when the guard does not apply."""
        n = len(feats.urls)
        if group is None or n <= self.k or self._counts.get(group, 0) < self.hot_count:
            return None
        with_metrics = feats.has_metrics > 0
        if not with_metrics.any() or float(feats.kv_usage[with_metrics].mean()) < self.kv_threshold:
            return None
        if float(feats.matched_tokens.max()) < MIN_SHARED_FRACTION * feats.prompt_tokens:
            return None
        scores = [xxhash.xxh3_64_intdigest(url.encode(), group & 0xFFFFFFFFFFFFFFFF) for url in feats.urls]
        top = np.argsort(np.asarray(scores, dtype=np.uint64))[-self.k:]
        mask = np.zeros(n, dtype=bool)
        mask[top] = True
        self.activations += 1
        return mask
