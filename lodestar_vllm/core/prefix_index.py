"""An approximate, per-engine model of each engine's prefix cache, built from the text the router sent there.

Prompts are cut into blocks of ``block_tokens`` tokens (4 characters per token, lodestar_vllm.tokenizer) and
each block gets a chained xxhash, so equal text prefixes give equal chains whatever the engine's own block size.
Each engine holds an LRU of its blocks bounded by its KV capacity (``num_gpu_blocks x block_size`` when the
engine reports it, else a configured default), and the whole index is bounded by a global cap: memory stays
bounded however many distinct prompts pass through.

Lookup walks the request's chain once for all candidates at the same time: a block-hash -> bitmask-of-engines
map means a match costs one dict lookup per matched block, not one per (block, engine).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import xxhash

from lodestar_vllm.tokenizer import CHARS_PER_TOKEN


class PrefixIndex:
    def __init__(self, block_tokens: int = 32, default_capacity_blocks: int = 8192,
                 max_total_blocks: int = 2_000_000, half_life_s: float = 15.0) -> None:
        if block_tokens <= 0 or default_capacity_blocks <= 0 or max_total_blocks <= 0:
            raise ValueError("prefix index sizes must be positive")
        self.block_tokens = block_tokens
        self.default_capacity_blocks = default_capacity_blocks
        self.max_total_blocks = max_total_blocks
        self.half_life_s = half_life_s
        self._span = block_tokens * CHARS_PER_TOKEN
        # block hash -> bitmask of engine slots holding it
        self._holders: dict[int, int] = {}
        # engine url -> LRU of (block hash -> last access time); oldest first
        self._lru: dict[str, OrderedDict[int, float]] = {}
        self._capacity: dict[str, int] = {}
        self._slot: dict[str, int] = {}
        self._free_slots: list[int] = []
        self._total = 0
        self.evictions = 0

    # --- hashing ------------------------------------------------------------------------------------------
    def hashes(self, text: str) -> list[int]:
        """Chained hashes of the full blocks of ``text`` (partial trailing block ignored, like vLLM)."""
        # UTF-32 keeps one character = 4 bytes, so block boundaries stay on character counts for any text.
        span = self._span * 4
        data = memoryview(text.encode("utf-32-le"))
        out: list[int] = []
        prev = 0
        digest = xxhash.xxh3_64_intdigest
        for start in range(0, len(data) - span + 1, span):
            prev = digest(data[start : start + span], prev)
            out.append(prev)
        return out

    # --- capacity -----------------------------------------------------------------------------------------
    def set_capacity_tokens(self, url: str, tokens: int) -> None:
        """Bound an engine's modelled cache by its KV capacity in tokens (from /metrics cache_config_info)."""
        blocks = max(1, int(tokens) // self.block_tokens)
        if self._capacity.get(url) != blocks:
            self._capacity[url] = blocks
            lru = self._lru.get(url)
            if lru is not None:
                self._evict(url, lru, len(lru) - blocks)

    def capacity_blocks(self, url: str) -> int:
        return self._capacity.get(url, self.default_capacity_blocks)

    # --- lookup -------------------------------------------------------------------------------------------
    def match(self, hashes: Sequence[int], urls: Sequence[str], now: float) -> tuple[np.ndarray, np.ndarray]:
        """Per url: matched prefix blocks, and the freshness (0..1, halves every half-life) of the last one."""
        n = len(urls)
        matched = np.zeros(n, dtype=np.float64)
        fresh = np.zeros(n, dtype=np.float64)
        if not hashes or not self._holders:
            return matched, fresh
        slot_of = self._slot
        pos: dict[int, int] = {}
        alive = 0
        for i, url in enumerate(urls):
            slot = slot_of.get(url)
            if slot is not None:
                alive |= 1 << slot
                pos[slot] = i
        if not alive:
            return matched, fresh
        holders = self._holders
        depth = 0
        last_hash = {}
        for depth, h in enumerate(hashes):  # noqa: B007 - depth used after the loop
            held = holders.get(h, 0) & alive
            if held != alive:
                self._record(alive & ~held, depth, pos, matched, last_hash, hashes)
                alive = held
                if not alive:
                    break
        else:
            depth = len(hashes)
        if alive:
            self._record(alive, depth, pos, matched, last_hash, hashes)
        for i, h in last_hash.items():
            when = self._lru[urls[i]].get(h)
            if when is not None:
                fresh[i] = 0.5 ** (max(0.0, now - when) / self.half_life_s)
        return matched, fresh

    @staticmethod
    def _record(mask: int, depth: int, pos: dict[int, int], matched: np.ndarray,
                last_hash: dict[int, int], hashes: Sequence[int]) -> None:
        while mask:
            low = mask & -mask
            i = pos[low.bit_length() - 1]
            matched[i] = depth
            if depth:
                last_hash[i] = hashes[depth - 1]
            mask ^= low

    # --- update -------------------------------------------------------------------------------------------
    def insert(self, url: str, hashes: Sequence[int], now: float) -> None:
        """The router sent this prompt to ``url``: its blocks are (or will shortly be) cached there."""
        if not hashes:
            return
        lru = self._lru.get(url)
        if lru is None:
            lru = self._lru[url] = OrderedDict()
            self._slot[url] = self._free_slots.pop() if self._free_slots else len(self._slot)
        bit = 1 << self._slot[url]
        holders = self._holders
        added = 0
        for h in hashes:
            if h in lru:
                lru.move_to_end(h)
            else:
                holders[h] = holders.get(h, 0) | bit
                added += 1
            lru[h] = now
        self._total += added
        over = len(lru) - self.capacity_blocks(url)
        if over > 0:
            self._evict(url, lru, over)
        if self._total > self.max_total_blocks:
            # Trim the largest engine first: its oldest blocks are the likeliest to be gone on the engine too.
            largest = max(self._lru, key=lambda u: len(self._lru[u]))
            self._evict(largest, self._lru[largest], self._total - self.max_total_blocks)

    def forget(self, url: str) -> None:
        """Drop an engine that left the fleet."""
        lru = self._lru.get(url)
        if lru is None:
            return
        self._evict(url, lru, len(lru))
        del self._lru[url]
        self._free_slots.append(self._slot.pop(url))
        self._capacity.pop(url, None)

    def _evict(self, url: str, lru: OrderedDict[int, float], count: int) -> None:
        bit = 1 << self._slot[url]
        holders = self._holders
        for _ in range(min(count, len(lru))):
            h, _when = lru.popitem(last=False)
            rest = holders.get(h, 0) & ~bit
            if rest:
                holders[h] = rest
            else:
                holders.pop(h, None)
            self._total -= 1
            self.evictions += 1

    # --- introspection ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._total

    def blocks(self, url: str) -> int:
        lru = self._lru.get(url)
        return 0 if lru is None else len(lru)

    def urls(self) -> list[str]:
        return list(self._lru)
