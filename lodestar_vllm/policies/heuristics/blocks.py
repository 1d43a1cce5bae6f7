"""Chained block hashes of prompt text: the shared key scheme of every router-side prefix index.

Hash ``i`` covers the whole prefix up to block ``i`` (xxh64 of the block seeded with hash ``i-1``), so one dict
lookup per block answers "does this engine have this exact prefix", which is what a trie walk answers. Cost is
one C-level hash per block and no per-character Python loop. Blocks are cut on the UTF-8 bytes of the text, as
the Go and Rust routers do (for ASCII text a byte is a character).
"""

from __future__ import annotations

import xxhash

_MASK = (1 << 64) - 1


def chained_hashes(
    text: str, block_chars: int, *, seed: int = 0, max_blocks: int | None = None, partial_tail: bool = False
) -> list[int]:
    """Hashes of the full ``block_chars`` blocks of ``text`` (and of the trailing partial block if asked)."""
    if block_chars <= 0:
        raise ValueError(f"block_chars must be positive, got {block_chars}")
    data = text.encode("utf-8", "surrogatepass")
    n = len(data)
    full = n // block_chars
    if max_blocks is not None:
        full = min(full, max_blocks)
    digest = xxhash.xxh64_intdigest
    prev = seed & _MASK
    out: list[int] = []
    append = out.append
    for start in range(0, full * block_chars, block_chars):
        prev = digest(data[start : start + block_chars], prev)
        append(prev)
    tail_start = full * block_chars
    if partial_tail and tail_start < n and (max_blocks is None or full < max_blocks):
        append(digest(data[tail_start:], prev))
    return out
