"""The emulator's tokenizer: deterministic and prefix-stable.

A token is a fixed run of ``CHARS_PER_TOKEN`` characters, so the same text prefix always yields the same token
prefix (prefix caching then works on text sent by routers), and token counts are ~4 per character of
English-like text as with real BPE tokenizers. Token ids are a stable hash of the chunk (not Python's salted
``hash``), so ids agree across processes.

Routers use ``estimate_tokens`` for the same count without materialising ids.
"""

from __future__ import annotations

import zlib

CHARS_PER_TOKEN = 4
VOCAB_SIZE = 32000


def estimate_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def token_text(text: str, index: int) -> str:
    return text[index * CHARS_PER_TOKEN : (index + 1) * CHARS_PER_TOKEN]


def encode(text: str) -> list[int]:
    n = CHARS_PER_TOKEN
    return [zlib.crc32(text[i : i + n].encode()) % VOCAB_SIZE for i in range(0, len(text), n)]


def text_for_tokens(num_tokens: int, seed: int) -> str:
    """Deterministic filler text of exactly ``num_tokens`` tokens (words of English-like length)."""
    words = ("the ", "and ", "data", "rout", "cach", "fast", "gpu ", "tok ", "infe", "serv", "mode", "lear")
    out = []
    x = seed & 0xFFFFFFFF or 1
    for _ in range(num_tokens):
        # xorshift32: cheap, deterministic, no global RNG state touched
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out.append(words[x % len(words)])
    return "".join(out)


def text_block_hashes(text: str, block_size: int, limit_tokens: int | None = None) -> list[int]:
    """Chained hashes of the FULL token blocks of ``text`` (vLLM's prefix-cache keys, computed on text).

    Equal text prefixes give equal hash chains. Python's ``hash`` is salted per process, which is fine: the
    keys never leave the process that made them.
    """
    span = block_size * CHARS_PER_TOKEN
    n_tokens = estimate_tokens(text) if limit_tokens is None else min(limit_tokens, estimate_tokens(text))
    full = n_tokens // block_size
    out: list[int] = []
    prev = 0
    for i in range(full):
        prev = hash((prev, text[i * span : (i + 1) * span]))
        out.append(prev)
    return out


def token_block_hashes(token_ids: list[int], block_size: int) -> list[int]:
    """The same chain over token ids (for prompts sent as ids)."""
    out: list[int] = []
    prev = 0
    for i in range(len(token_ids) // block_size):
        prev = hash((prev, tuple(token_ids[i * block_size : (i + 1) * block_size])))
        out.append(prev)
    return out
