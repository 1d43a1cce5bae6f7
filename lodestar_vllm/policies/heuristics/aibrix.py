"""``aibrix-prefix-load``: AIBrix's prefix-cache router (the Lodestar paper's baseline).

Mirrors vllm-project/aibrix ``pkg/plugins/gateway/algorithms/prefix_cache.go`` (``routeOriginal``,
``getTargetPodListOnLoadImbalance``, ``getTargetPodFromMatchedPods``), ``least_request.go``
(``selectTargetPodWithLeastRequestCount``, ``getRequestCounts``), ``util.go`` (``mean``, sample
``standardDeviation``) and ``pkg/utils/prefixcacheindexer/hash.go`` + ``pkg/utils/lrustore/lru_store.go``
(``PrefixHashTable``), commit e3e10f9e:

1. Load = gateway-tracked running requests per pod (here: this router's in-flight count).
2. If ``max - min > 8`` (``AIBRIX_PREFIX_CACHE_POD_RUNNING_REQUEST_IMBALANCE_ABS_COUNT``) the candidate set for
   prefix matching shrinks to the pods at the minimum.
3. Prefix match: the prompt is tokenized and cut into blocks of 4 tokens (``AIBRIX_PREFIX_CACHE_BLOCK_SIZE``);
   chained xxhash per block; a pod matches block ``i`` only if it matched every block before it; its score is
   ``(i + 1) * 100 // n_blocks`` (integer percent).
4. Matched pods are shuffled, stably sorted by percent desc then running asc, and the first with
   ``running <= mean + 1 * stddev`` (``AIBRIX_PREFIX_CACHE_STANDARD_DEVIATION_FACTOR``; mean and sample stddev over
   all ready pods) wins.
5. Otherwise least-request (random among ties) over all ready pods.
6. The chosen pod is recorded for every block of the prompt.

The index is one LRU store of 200000 blocks (``AIBRIX_PREFIX_CACHE_BLOCK_NUMBER``) whose entries also expire
20 minutes after their last write (``AIBRIX_PREFIX_CACHE_EVICTION_DURATION_MINS``); reads do not refresh an
entry, as upstream. Tokens come from ``lodestar_vllm.tokenizer`` (4 characters per token), so a block is 16
characters; upstream's default ``character`` tokenizer makes a block 4 bytes.
"""

from __future__ import annotations

import statistics
from collections import OrderedDict
from collections.abc import Sequence

from lodestar_vllm.core.types import InstanceView, RequestInfo
from lodestar_vllm.policies.heuristics.blocks import chained_hashes
from lodestar_vllm.policies.heuristics.load_balancing import least_request
from lodestar_vllm.policies.heuristics.tracked import Choice, TrackedPolicy
from lodestar_vllm.tokenizer import CHARS_PER_TOKEN


class PrefixHashTable:
    """Block hash -> (last write time, pods it was sent to), LRU-capped and TTL-expired.

    Values are shared: one ``(now, pods)`` tuple per distinct pod set per ``add`` call, with interned pod
    frozensets. A container per block made allocation and the cyclic GC dominate at 200000 blocks.
    """

    def __init__(self, capacity: int = 200_000, ttl: float = 20 * 60.0) -> None:
        if capacity <= 0 or ttl <= 0:
            raise ValueError(f"capacity and ttl must be positive, got {capacity}, {ttl}")
        self.capacity = capacity
        self.ttl = ttl
        # Put order == last-write order (a put moves the entry to the end), so TTL expiry pops from the front.
        self._store: OrderedDict[int, tuple[float, frozenset[str]]] = OrderedDict()
        self._singles: dict[str, frozenset[str]] = {}

    def __len__(self) -> int:
        return len(self._store)

    def match(self, hashes: list[int], ready: set[str]) -> dict[str, int]:
        """Pod -> integer percent of the prompt's blocks it holds as an unbroken prefix."""
        # Upstream narrows its readyPods map in place as blocks stop matching, so a pod's percent is the one of
        # the last block it still matched: record it when the pod drops out (or at the end).
        matched: dict[str, int] = {}
        still = set(ready)
        n = len(hashes)
        store = self._store
        i = 0
        while i < n and len(still) > 1:
            entry = store.get(hashes[i])
            if entry is None:
                break
            pods = entry[1]
            if not pods >= still:  # C-level subset test: the common case allocates nothing
                kept = still & pods
                if not kept:
                    break
                for pod in still - kept:
                    if i:
                        matched[pod] = i * 100 // n
                still = kept
            i += 1
        if len(still) == 1 and i < n:
            (pod,) = still
            # One pod left: a tight walk, as this is where long shared prefixes spend their blocks.
            while i < n:
                entry = store.get(hashes[i])
                if entry is None or pod not in entry[1]:
                    break
                i += 1
        if i:
            for pod in still:
                matched[pod] = i * 100 // n
        return matched

    def add(self, hashes: list[int], pod: str, now: float) -> None:
        store = self._store
        single = self._singles.get(pod)
        if single is None:
            single = self._singles[pod] = frozenset((pod,))
        fresh = (now, single)
        shared: dict[frozenset[str], tuple[float, frozenset[str]]] = {single: fresh}
        get, move = store.get, store.move_to_end
        for h in hashes:
            entry = get(h)
            if entry is None:
                store[h] = fresh
                continue
            pods = entry[1]
            if pod not in pods:
                pods = pods | single
            value = shared.get(pods)
            if value is None:
                value = shared[pods] = (now, pods)
            store[h] = value
            move(h)
        excess = len(store) - self.capacity
        if excess > 0:
            pop = store.popitem
            for _ in range(excess):
                pop(False)

    def evict_expired(self, now: float) -> None:
        store = self._store
        horizon = now - self.ttl
        while store:
            h, (written, _) = next(iter(store.items()))
            if written >= horizon:
                break
            del store[h]

    def forget(self, pods: set[str]) -> None:
        changed = {h: (t, held - pods) for h, (t, held) in self._store.items() if not held.isdisjoint(pods)}
        for h, (t, held) in changed.items():
            if held:
                self._store[h] = (t, held)
            else:
                del self._store[h]
        for pod in pods:
            self._singles.pop(pod, None)


class AibrixPrefixLoadPolicy(TrackedPolicy):
    name = "aibrix-prefix-load"

    def __init__(
        self,
        seed: int = 0,
        imbalance_abs_count: int = 8,
        stddev_factor: float = 1.0,
        block_size_tokens: int = 4,
        block_number: int = 200_000,
        eviction_seconds: float = 20 * 60.0,
        **kwargs: float,
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        if block_size_tokens <= 0:
            raise ValueError(f"block_size_tokens must be positive, got {block_size_tokens}")
        self.imbalance_abs_count = imbalance_abs_count
        self.stddev_factor = stddev_factor
        self.block_chars = block_size_tokens * CHARS_PER_TOKEN
        self.index = PrefixHashTable(block_number, eviction_seconds)

    def _choose(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Choice:
        self.index.evict_expired(now)
        counts = {c.url: self.inflight.requests(c.url) for c in candidates}
        hashes = chained_hashes(request.prompt_text or "", self.block_chars)

        ready = set(counts)
        lo, hi = min(counts.values()), max(counts.values())
        imbalanced = hi - lo > self.imbalance_abs_count
        if imbalanced:
            ready = {url for url, n in counts.items() if n == lo}

        matched = self.index.match(hashes, ready)
        url = self._pick_matched(matched, counts) if matched else None
        if url is not None:
            reason = f"prefix match {matched[url]}%" + (" among least-loaded (imbalanced)" if imbalanced else "")
        else:
            url = least_request(candidates, self)
            reason = "least request" + (" (imbalanced)" if imbalanced else "") + (
                " (matched pods over mean+k*std)" if matched else " (no prefix match)"
            )
        if hashes:
            self.index.add(hashes, url, now)
        return Choice(url, reason)

    def _pick_matched(self, matched: dict[str, int], counts: dict[str, int]) -> str | None:
        loads = [float(n) for n in counts.values()]
        mean = statistics.fmean(loads)
        std = statistics.stdev(loads) if len(loads) > 1 else 0.0
        limit = mean + self.stddev_factor * std
        pods = sorted(matched)  # fixed order before the seeded shuffle
        self.rng.shuffle(pods)
        pods.sort(key=lambda pod: (-matched[pod], counts[pod]))  # stable, like sort.SliceStable
        for pod in pods:
            if counts[pod] <= limit:
                return pod
        return None

    def _forget_urls(self, urls: set[str]) -> None:
        self.index.forget(urls)
