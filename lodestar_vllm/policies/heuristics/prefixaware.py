"""``prefixaware``: production-stack's PrefixAwareRouter.

Mirrors vllm-project/production-stack ``src/vllm_router/routers/routing_logic.py`` (``PrefixAwareRouter``) and
``src/vllm_router/prefix/hashtrie.py`` (``HashTrie``), commit a6c01db0:

- the prompt text is cut into 128-character chunks hashed with xxhash; the trie remembers which endpoints were
  sent each prefix;
- the longest prefix held by an available endpoint wins; ties are broken uniformly at random;
- when the match is shorter than ``prefix_min_match_length`` characters (``--prefix-min-match-length``, 0 by
  default) the request goes to ``_qps_routing`` instead, and the prompt is still recorded;
- there is no load awareness and no eviction model.

One deviation, for bounded memory: upstream's trie never forgets. Here the trie is a dict keyed by the chained
chunk hash (equivalent to a path in the trie) capped at ``max_nodes`` entries with least-recently-inserted
eviction; until the cap is reached it behaves exactly like upstream.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from lodestar_vllm.core.types import InstanceView, RequestInfo
from lodestar_vllm.policies.heuristics.blocks import chained_hashes
from lodestar_vllm.policies.heuristics.qps import ArrivalRates, qps_routing
from lodestar_vllm.policies.heuristics.tracked import Choice, TrackedPolicy


class HashTrie:
    """Prefix (as chained chunk hashes) -> endpoints that were sent it."""

    def __init__(self, chunk_size: int = 128, max_nodes: int = 1_000_000) -> None:
        if chunk_size <= 0 or max_nodes <= 0:
            raise ValueError(f"chunk_size and max_nodes must be positive, got {chunk_size}, {max_nodes}")
        self.chunk_size = chunk_size
        self.max_nodes = max_nodes
        # Endpoint sets are interned frozensets: a container per node would make the cyclic GC dominate.
        self._nodes: OrderedDict[int, frozenset[str]] = OrderedDict()
        self._singles: dict[str, frozenset[str]] = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def hashes(self, text: str) -> list[int]:
        # Upstream hashes the trailing partial chunk too (range(0, len, chunk_size)).
        return chained_hashes(text, self.chunk_size, partial_tail=True)

    def longest_prefix_match(self, hashes: list[int], available: set[str]) -> tuple[int, set[str]]:
        """(matched characters, endpoints holding that longest prefix) among ``available``."""
        selected: set[str] | frozenset[str] = available
        match_length = 0
        for h in hashes:
            endpoints = self._nodes.get(h)
            if not endpoints:
                break
            intersection = endpoints & selected
            if not intersection:
                break
            match_length += self.chunk_size
            selected = intersection
        return match_length, set(selected)

    def insert(self, hashes: list[int], endpoint: str) -> None:
        nodes = self._nodes
        single = self._singles.get(endpoint)
        if single is None:
            single = self._singles[endpoint] = frozenset((endpoint,))
        get, move = nodes.get, nodes.move_to_end
        for h in hashes:
            endpoints = get(h)
            if endpoints is None:
                nodes[h] = single
            else:
                if endpoint not in endpoints:
                    nodes[h] = endpoints | single
                move(h)
        excess = len(nodes) - self.max_nodes
        if excess > 0:
            pop = nodes.popitem
            for _ in range(excess):
                pop(False)

    def forget(self, endpoints: set[str]) -> None:
        changed = {h: held - endpoints for h, held in self._nodes.items() if not held.isdisjoint(endpoints)}
        for h, held in changed.items():
            if held:
                self._nodes[h] = held
            else:
                del self._nodes[h]
        for endpoint in endpoints:
            self._singles.pop(endpoint, None)


class PrefixAwarePolicy(TrackedPolicy):
    name = "prefixaware"

    def __init__(
        self,
        seed: int = 0,
        prefix_min_match_length: int = 0,
        chunk_size: int = 128,
        max_nodes: int = 1_000_000,
        request_stats_window: float = 60.0,
        **kwargs: float,
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        self.prefix_min_match_length = prefix_min_match_length
        self.trie = HashTrie(chunk_size, max_nodes)
        self.rates = ArrivalRates(request_stats_window)

    def _choose(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Choice:
        hashes = self.trie.hashes(request.prompt_text or "")
        available = {c.url for c in candidates}
        match_length, matched = self.trie.longest_prefix_match(hashes, available)
        if match_length < self.prefix_min_match_length:
            url = qps_routing(candidates, self.rates, now)
            reason = f"match {match_length} < min {self.prefix_min_match_length} chars: lowest qps"
        else:
            # Sorted first: set order of str is salted per process, and a seed must reproduce the choice.
            url = self.rng.choice(sorted(matched))
            reason = f"longest prefix match {match_length} chars ({len(matched)} engines)"
        self.trie.insert(hashes, url)
        self.rates.record(url, now)
        return Choice(url, reason)

    def _forget_urls(self, urls: set[str]) -> None:
        self.trie.forget(urls)
        self.rates.forget(urls)
