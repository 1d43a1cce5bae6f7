"""llm-d's approximate prefix-cache index (what ``prefix-cache-scorer`` and the affinity filter read).

Mirrors llm-d/llm-d-inference-scheduler
``pkg/epp/framework/plugins/requestcontrol/dataproducer/approximateprefix/{hashing.go,indexer.go,plugin.go,
types.go}``, commit 520af478:

- the prompt is cut into blocks of ``block_size_tokens * 4`` characters (``averageCharactersPerToken``); the
  block size is auto-tuned from the engine's reported block size (``autoTune``), else 16; at most 256 blocks
  are hashed (``maxPrefixBlocksToMatch``) and a trailing partial block is hashed too; the first hash is seeded
  with the model name;
- each server keeps an LRU of the block hashes sent to it, sized to its reported GPU block count
  (``autoTune``), else 31250 (``lruCapacityPerServer``); hash -> servers is kept in step with evictions;
- a match counts, per server, the blocks it holds walking from the first block and stopping at the first
  block no server holds; score = matched / total blocks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import xxhash

from lodestar_vllm.core.types import InstanceView
from lodestar_vllm.policies.heuristics.blocks import chained_hashes
from lodestar_vllm.tokenizer import CHARS_PER_TOKEN

DEFAULT_BLOCK_SIZE_TOKENS = 16
DEFAULT_MAX_PREFIX_BLOCKS = 256
DEFAULT_LRU_CAPACITY_PER_SERVER = 31250


class ApproxPrefixIndex:
    def __init__(
        self,
        block_size_tokens: int = DEFAULT_BLOCK_SIZE_TOKENS,
        max_prefix_blocks: int = DEFAULT_MAX_PREFIX_BLOCKS,
        lru_capacity_per_server: int = DEFAULT_LRU_CAPACITY_PER_SERVER,
        auto_tune: bool = True,
    ) -> None:
        if min(block_size_tokens, max_prefix_blocks, lru_capacity_per_server) <= 0:
            raise ValueError("block size, max prefix blocks and LRU capacity must be positive")
        self.block_size_tokens = block_size_tokens
        self.max_prefix_blocks = max_prefix_blocks
        self.lru_capacity_per_server = lru_capacity_per_server
        self.auto_tune = auto_tune
        self._server_lru: dict[str, OrderedDict[int, None]] = {}
        # Server sets are interned frozensets: a container per block would make the cyclic GC dominate.
        self._hash_servers: dict[int, frozenset[str]] = {}
        self._singles: dict[str, frozenset[str]] = {}
        self._capacity: dict[str, int] = {}

    def block_size(self, candidates: Sequence[InstanceView]) -> int:
        if self.auto_tune and candidates:
            metrics = candidates[0].metrics
            if metrics is not None and metrics.block_size:
                return metrics.block_size
        return self.block_size_tokens

    def hashes(self, text: str, model: str, block_size: int) -> list[int]:
        block_chars = block_size * CHARS_PER_TOKEN
        if len(text) < block_chars:
            return []
        seed = xxhash.xxh64_intdigest(model.encode("utf-8", "surrogatepass"))
        return chained_hashes(text, block_chars, seed=seed, max_blocks=self.max_prefix_blocks, partial_tail=True)

    def match(self, hashes: list[int]) -> dict[str, int]:
        """Server -> number of matched blocks."""
        counts: dict[str, int] = {}
        for h in hashes:
            servers = self._hash_servers.get(h)
            if not servers:
                break
            for server in servers:
                counts[server] = counts.get(server, 0) + 1
        return counts

    def add(self, hashes: list[int], server: str, view: InstanceView | None = None) -> None:
        lru = self._server_lru.get(server)
        if lru is None:
            lru = self._server_lru[server] = OrderedDict()
            # Sized once, when the server is first seen, as upstream sizes its per-pod LRU.
            capacity = self.lru_capacity_per_server
            if self.auto_tune and view is not None and view.metrics is not None and view.metrics.num_gpu_blocks:
                capacity = view.metrics.num_gpu_blocks
            self._capacity[server] = capacity
        capacity = self._capacity[server]
        single = self._singles.get(server)
        if single is None:
            single = self._singles[server] = frozenset((server,))
        hash_servers = self._hash_servers
        for h in hashes:
            if h in lru:
                lru.move_to_end(h)
            else:
                lru[h] = None
            servers = hash_servers.get(h)
            if servers is None:
                hash_servers[h] = single
            elif server not in servers:
                hash_servers[h] = servers | single
        while len(lru) > capacity:
            evicted, _ = lru.popitem(last=False)
            self._drop(evicted, server)

    def forget(self, servers: set[str]) -> None:
        for server in servers:
            lru = self._server_lru.pop(server, None)
            self._capacity.pop(server, None)
            for h in lru or ():
                self._drop(h, server)
            self._singles.pop(server, None)

    def size(self) -> int:
        return sum(len(lru) for lru in self._server_lru.values())

    def _drop(self, h: int, server: str) -> None:
        servers = self._hash_servers.get(h)
        if servers is not None and server in servers:
            rest = servers - {server}
            if rest:
                self._hash_servers[h] = rest
            else:
                del self._hash_servers[h]
