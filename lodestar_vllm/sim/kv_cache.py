"""The paged KV cache: a pool of fixed-size blocks with prefix caching, as vLLM V1's BlockPool.

Blocks are ints ``0..num_blocks-1``. A block is either in use (ref count > 0) or free; a free block may still
hold a cached prompt block (its chain hash maps to it) until it is evicted. The free queue is LRU: freeing
appends at the tail, allocation takes the head, so callers free a request's blocks tail-first and its tail is
reused first, as vLLM does. Only FULL prompt blocks carry a hash (their chain hash from the caller).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

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
    """The free queue is a deque with lazy deletion and per-block state lives in dense arrays, so that the
    hot paths touch little memory (an OrderedDict free queue and set/dict block state cost ~1.5-3x more).

    A block is in use when ``_in_use[block]`` is set (``_shared`` holds the reference count when it is 2 or
    more) and free otherwise. Freeing appends to ``_fifo``; allocation pops from its head. A prefix hit on a
    free block takes it out of the free set at once but leaves its queue entry behind, counted in ``_stale``:
    the block's entries before its latest one are all stale, so an entry popped while its block has stale
    entries is skipped. ``_hash_of[block]`` is set exactly when ``_cached`` maps that hash to the block."""

    __slots__ = ("num_blocks", "_fifo", "_stale", "_num_free", "_in_use", "_shared", "_cached", "_hash_of")

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self._fifo: deque[int] = deque(range(num_blocks))  # head: next to evict
        self._stale: dict[int, int] = {}  # block -> queue entries of it that are no longer valid
        self._num_free = num_blocks
        self._in_use = bytearray(num_blocks)
        self._shared: dict[int, int] = {}  # block -> reference count, for counts >= 2
        self._cached: dict[int, int] = {}  # chain hash -> block
        self._hash_of: list[int | None] = [None] * num_blocks  # block -> chain hash

    @property
    def num_free(self) -> int:
        """Free blocks, cached ones included (they are evictable): vLLM's usage is 1 - free / total."""
        return self._num_free

    @property
    def num_cached(self) -> int:
        return len(self._cached)

    def usage(self) -> float:
        return 1.0 - self._num_free / self.num_blocks

    def ref_count(self, block: int) -> int:
        if not self._in_use[block]:
            return 0
        return self._shared.get(block, 1)

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
        in_use = self._in_use
        return sum(1 for b in blocks if not in_use[b])

    def touch(self, blocks: Sequence[int]) -> None:
        """Take a reference on prefix-hit blocks (a free cached block leaves the free queue)."""
        in_use = self._in_use
        shared = self._shared
        stale = self._stale
        for b in blocks:
            if in_use[b]:
                shared[b] = shared.get(b, 1) + 1
            else:
                in_use[b] = 1
                stale[b] = stale.get(b, 0) + 1
                self._num_free -= 1
        if len(self._fifo) > 2 * self.num_blocks:
            self._compact()

    def _compact(self) -> None:
        """Drop the stale queue entries (amortised: only after num_blocks prefix hits on free blocks)."""
        stale = self._stale
        kept = []
        for b in self._fifo:
            c = stale.get(b)
            if c:
                if c == 1:
                    del stale[b]
                else:
                    stale[b] = c - 1
            else:
                kept.append(b)
        self._fifo = deque(kept)

    def _take(self, n: int) -> list[int]:
        """Pop the ``n`` least recently freed blocks, evicting their cached hashes, and mark them in use."""
        popleft = self._fifo.popleft
        stale = self._stale
        if not stale:
            got = [popleft() for _ in range(n)]
        else:
            got = []
            while len(got) < n:
                b = popleft()
                c = stale.get(b)
                if c:
                    if c == 1:
                        del stale[b]
                    else:
                        stale[b] = c - 1
                else:
                    got.append(b)
        self._num_free -= n
        in_use = self._in_use
        hash_of = self._hash_of
        cached = self._cached
        for b in got:
            in_use[b] = 1
            h = hash_of[b]
            if h is not None:
                del cached[h]
                hash_of[b] = None
        return got

    def allocate(self, n: int, out: list[int]) -> None:
        """Append ``n`` fresh blocks to ``out``, evicting the least recently freed cached ones. The caller
        checks ``num_free`` first: allocation is all-or-nothing at the scheduler level."""
        if n > 0:
            out += self._take(n)

    def allocate_and_cache(self, n: int, out: list[int], hashes: Sequence[int], cache_until: int) -> None:
        """``allocate(n, out)`` that also registers ``hashes[i]`` for each new block ``out[i]`` with
        ``i < cache_until`` (a prompt's full blocks computed in this step)."""
        start = len(out)
        self.allocate(n, out)
        stop = min(cache_until, len(out))
        if stop > start:
            self.cache_blocks(out, hashes, start, stop)

    def allocate_each(self, owners: Sequence[list[int]]) -> None:
        """Append one fresh block to each list (decoders crossing a block boundary in the same step)."""
        for blocks, b in zip(owners, self._take(len(owners)), strict=True):
            blocks.append(b)

    def allocate_one(self) -> int:
        return self._take(1)[0]

    def cache_block(self, block: int, block_hash: int) -> None:
        """Register a full prompt block under its chain hash; an equal block already cached is kept."""
        if block_hash not in self._cached and self._hash_of[block] is None:
            self._cached[block_hash] = block
            self._hash_of[block] = block_hash

    def cache_blocks(self, blocks: Sequence[int], hashes: Sequence[int], start: int, stop: int) -> None:
        """``cache_block(blocks[i], hashes[i])`` for i in [start, stop)."""
        new_hashes = hashes[start:stop]
        new_blocks = blocks[start:stop]
        cached = self._cached
        hash_of = self._hash_of
        for h, b in zip(new_hashes, new_blocks, strict=True):
            if h not in cached and hash_of[b] is None:
                cached[h] = b
                hash_of[b] = h

    def free(self, blocks: Sequence[int]) -> None:
        """Drop one reference on each of a request's blocks (in request order); they are released tail
        first, so a request's tail is evicted before its head."""
        shared = self._shared
        if shared and not shared.keys().isdisjoint(blocks):
            released = [b for b in blocks if b not in shared]
            for b in shared.keys() & set(blocks):
                count = shared[b] - 1
                if count == 1:
                    del shared[b]
                else:
                    shared[b] = count
        else:
            released = blocks
        in_use = self._in_use
        for b in released:
            in_use[b] = 0
        self._fifo.extend(reversed(released))
        self._num_free += len(released)

    def free_order(self) -> list[int]:
        """The free queue, next-to-evict first (tests and debugging)."""
        stale = dict(self._stale)
        out = []
        for b in self._fifo:
            if stale.get(b):
                stale[b] -= 1
            else:
                out.append(b)
        return out

    def is_cached(self, block_hash: int) -> bool:
        return block_hash in self._cached
