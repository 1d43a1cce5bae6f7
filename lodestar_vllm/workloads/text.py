"""Deterministic prompt text from ``(key, tokens)`` segments, built by slicing, so it is cheap.

The text of a key is a 3-token tag spelling the key (so different keys differ within their first 3 tokens and
never fake a shared prefix) followed by 512-token slices of a fixed pool of English-like 4-character words at
offsets drawn from the key. ``segment_text(key, n)`` is always a prefix of ``segment_text(key, m)`` for
``n <= m``: a partial last block is a prefix of the full block, as in a real prompt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import lru_cache

import numpy as np

from lodestar_vllm.tokenizer import CHARS_PER_TOKEN

TAG_TOKENS = 3
_TAG_CHARS = TAG_TOKENS * CHARS_PER_TOKEN
_KEY_BITS = 56  # 26**12 > 2**56: the 12-letter tag spells every key
_CHUNK_TOKENS = 512
_POOL_TOKENS = 1 << 16
_WORDS = ("the ", "and ", "data", "rout", "cach", "fast", "gpu ", "tok ", "infe", "serv", "mode", "lear",
          "for ", "with", "time", "over", "when", "test", "long", "rate")
_MASK64 = (1 << 64) - 1


@lru_cache(maxsize=1)
def _pool() -> str:
    rng = np.random.default_rng(20240611)
    table = np.frombuffer("".join(_WORDS).encode("ascii"), dtype=np.uint8).reshape(len(_WORDS), CHARS_PER_TOKEN)
    picks = rng.integers(0, len(_WORDS), size=_POOL_TOKENS)
    return table[picks].tobytes().decode("ascii")


def stable_key(*parts: object) -> int:
    """A key stable across processes and runs (Python's ``hash`` of str is salted per process)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> (64 - _KEY_BITS)


def unique_key(request_id: str) -> int:
    return stable_key("request", request_id)


def _mix(x: int) -> int:
    # splitmix64 finaliser: spreads consecutive (key, chunk) pairs over the pool
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _tag(key: int) -> str:
    letters = []
    k = key & ((1 << _KEY_BITS) - 1)
    for _ in range(_TAG_CHARS):
        k, r = divmod(k, 26)
        letters.append(chr(97 + r))
    return "".join(letters)


def segment_text(key: int, tokens: int) -> str:
    """Exactly ``tokens`` tokens (``4 * tokens`` characters) of the text of ``key``."""
    if tokens <= 0:
        return ""
    chars = tokens * CHARS_PER_TOKEN
    pool = _pool()
    parts = [_tag(key)]
    have = _TAG_CHARS
    chunk = 0
    span = _CHUNK_TOKENS * CHARS_PER_TOKEN
    limit = len(pool) - span
    while have < chars:
        start = (_mix(key * 1_000_003 + chunk) % (limit // CHARS_PER_TOKEN)) * CHARS_PER_TOKEN
        parts.append(pool[start : start + span])
        have += span
        chunk += 1
    return "".join(parts)[:chars]


def prompt_text_for(segments: Iterable[tuple[int, int]]) -> str:
    return "".join([segment_text(key, tokens) for key, tokens in segments])
