"""The paged KV cache: a pool of fixed-size blocks with prefix caching, as vLLM V1's BlockPool.

Blocks are ints ``0..num_blocks-1``. A block is either in use (ref count > 0) or free; a free block may still
hold a cached prompt block (its chain hash maps to it) until it is evicted. The free queue is LRU: freeing
appends at the tail, allocation takes the head, so callers free a request's blocks tail-first and its tail is
reused first, as vLLM does. Only FULL prompt blocks carry a hash (their chain hash from the caller).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from lodestar_vllm.sim.cluster_spec import EngineConfig
from lodestar_vllm.sim.profiles import GIB, EngineProfile


def num_gpu_blocks(profile: EngineProfile, config: EngineConfig) -> int:
    """KV capacity in blocks: (memory x utilization - weights - activation reserve) / bytes per block.

    ``config.num_gpu_blocks`` overrides (a real engine started with --kv-cache-memory-bytes or
    --num-gpu-blocks-override). Raises ValueError when nothing is left for the KV cache, like vLLM does.
    """
    if config.block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {config.block_size}")
    if config.num_gpu_blocks is not None:
        if config.num_gpu_blocks < 1:
            raise ValueError(f"num_gpu_blocks must be >= 1, got {config.num_gpu_blocks}")
        return config.num_gpu_blocks
    if profile.gpu.kv_space_bytes is not None:
        return max(1, profile.gpu.kv_space_bytes // (profile.kv_bytes_per_token * config.block_size))
    if not 0.0 < config.gpu_memory_utilization <= 1.0:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {config.gpu_memory_utilization}")
    usable = profile.gpu.memory_bytes * config.gpu_memory_utilization
    reserve = profile.reserve_bytes(config.max_num_batched_tokens, config.max_num_seqs)
    kv_bytes = usable - profile.weight_bytes_per_gpu - reserve
    blocks = int(kv_bytes // (profile.kv_bytes_per_token * config.block_size))
    if blocks < 1:
        raise ValueError(
            f"no memory left for the KV cache: {profile.name} at gpu_memory_utilization="
            f"{config.gpu_memory_utilization} has {usable / GIB:.1f} GiB for weights "
            f"{profile.weight_bytes_per_gpu / GIB:.1f} GiB + reserve {reserve / GIB:.1f} GiB"
        )
    return blocks


class BlockPool:
    __slots__ = ("num_blocks", "_ref", "_hash_of", "_cached", "_free")

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self._ref = [0] * num_blocks
        self._hash_of: list[int | None] = [None] * num_blocks
        self._cached: dict[int, int] = {}  # chain hash -> block
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))

    @property
    def num_free(self) -> int:
        """Free blocks, cached ones included (they are evictable): vLLM's usage is 1 - free / total."""
        return len(self._free)

    @property
    def num_cached(self) -> int:
        return len(self._cached)

    def usage(self) -> float:
        return 1.0 - len(self._free) / self.num_blocks

    def match_prefix(self, block_hashes: Sequence[int], max_blocks: int) -> list[int]:
        """Blocks holding the longest cached chain of ``block_hashes`` (at most ``max_blocks``); no mutation."""
        cached = self._cached
        out: list[int] = []
        for h in block_hashes[:max_blocks]:
            block = cached.get(h)
            if block is None:
                break
            out.append(block)
        return out

    def count_free_among(self, blocks: Sequence[int]) -> int:
        ref = self._ref
        return sum(1 for b in blocks if ref[b] == 0)

    def touch(self, blocks: Sequence[int]) -> None:
        """Take a reference on prefix-hit blocks (a free cached block leaves the free queue)."""
        ref = self._ref
        free = self._free
        for b in blocks:
            if ref[b] == 0:
                del free[b]
            ref[b] += 1

    def allocate(self, n: int, out: list[int]) -> None:
        """Append ``n`` fresh blocks to ``out``, evicting the least recently freed cached ones. The caller
        checks ``num_free`` first: allocation is all-or-nothing at the scheduler level."""
        if n <= 0:
            return
        pop = self._free.popitem
        ref = self._ref
        hash_of = self._hash_of
        cached = self._cached
        append = out.append
        for _ in range(n):
            b = pop(False)[0]
            h = hash_of[b]
            if h is not None:  # invariant: hash_of[b] == h exactly when cached[h] == b
                del cached[h]
                hash_of[b] = None
            ref[b] = 1
            append(b)

    def allocate_and_cache(self, n: int, out: list[int], hashes: Sequence[int], cache_until: int) -> None:
        """``allocate(n, out)`` that also registers ``hashes[i]`` for each new block ``out[i]`` with
        ``i < cache_until`` (a prompt's full blocks computed in this step), in one pass."""
        pop = self._free.popitem
        ref = self._ref
        hash_of = self._hash_of
        cached = self._cached
        append = out.append
        i = len(out)
        for _ in range(n):
            b = pop(False)[0]
            old = hash_of[b]
            if old is not None:
                del cached[old]
            ref[b] = 1
            append(b)
            if i < cache_until and (h := hashes[i]) not in cached:
                cached[h] = b
                hash_of[b] = h
            elif old is not None:
                hash_of[b] = None
            i += 1

    def allocate_each(self, owners: Iterable[list[int]]) -> None:
        """Append one fresh block to each list (decoders crossing a block boundary in the same step)."""
        pop = self._free.popitem
        ref = self._ref
        hash_of = self._hash_of
        cached = self._cached
        for blocks in owners:
            b = pop(False)[0]
            h = hash_of[b]
            if h is not None:
                del cached[h]
                hash_of[b] = None
            ref[b] = 1
            blocks.append(b)

    def allocate_one(self) -> int:
        b = self._free.popitem(False)[0]
        h = self._hash_of[b]
        if h is not None:
            del self._cached[h]
            self._hash_of[b] = None
        self._ref[b] = 1
        return b

    def cache_block(self, block: int, block_hash: int) -> None:
        """Register a full prompt block under its chain hash; an equal block already cached is kept."""
        if block_hash not in self._cached and self._hash_of[block] is None:
            self._cached[block_hash] = block
            self._hash_of[block] = block_hash

    def cache_blocks(self, blocks: Sequence[int], hashes: Sequence[int], start: int, stop: int) -> None:
        """``cache_block(blocks[i], hashes[i])`` for i in [start, stop)."""
        cached = self._cached
        hash_of = self._hash_of
        for i in range(start, stop):
            h = hashes[i]
            if h not in cached:
                b = blocks[i]
                if hash_of[b] is None:
                    cached[h] = b
                    hash_of[b] = h

    def free(self, blocks: Sequence[int]) -> None:
        """Drop one reference on each of a request's blocks (in request order); they are released tail
        first, so a request's tail is evicted before its head."""
        ref = self._ref
        free = self._free
        for b in reversed(blocks):
            r = ref[b] - 1
            ref[b] = r
            if r == 0:
                free[b] = None

    def free_order(self) -> list[int]:
        """The free queue, next-to-evict first (tests and debugging)."""
        return list(self._free)

    def is_cached(self, block_hash: int) -> bool:
        return block_hash in self._cached
