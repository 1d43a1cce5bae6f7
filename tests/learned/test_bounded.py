"""Every structure on the request path is bounded: ledger, explanations, prefix index."""

from __future__ import annotations

import numpy as np

from lodestar_vllm.core.ledger import DecisionRecord, Ledger
from lodestar_vllm.core.prefix_index import PrefixIndex
from lodestar_vllm.tokenizer import text_for_tokens


def _record(i: int, url: str = "u", t: float = 0.0) -> DecisionRecord:
    return DecisionRecord(request_id=f"r{i}", url=url, dispatched_at=t, path="model", reason="",
                          prompt_tokens=100, uncached_tokens=60, decode_tokens=10)


def test_ledger_counters_follow_dispatch_first_token_and_outcome() -> None:
    ledger = Ledger()
    ledger.dispatch(_record(1, "a"))
    ledger.dispatch(_record(2, "a"))
    req, pre, dec = ledger.counters(["a", "b"])
    assert list(req) == [2, 0] and list(pre) == [120, 0] and list(dec) == [20, 0]
    ledger.first_token("r1", 0.5)
    ledger.first_token("r1", 0.6)  # a duplicate first-token report changes nothing
    assert list(ledger.counters(["a"])[1]) == [60]
    assert ledger.complete("r1") is not None and ledger.complete("r1") is None
    ledger.complete("r2")
    assert [list(c) for c in ledger.counters(["a"])] == [[0], [0], [0]] and len(ledger) == 0


def test_ledger_is_capped_and_expires() -> None:
    ledger = Ledger(max_records=100, ttl_s=10.0, explain_ring=50)
    for i in range(1000):
        ledger.dispatch(_record(i, t=i * 0.001))
        ledger.remember(f"r{i}", {"i": i})
    assert len(ledger) == 100 and ledger.evicted == 900
    assert int(ledger.counters(["u"])[0][0]) == 100
    assert ledger.explanation("r999") == {"i": 999} and ledger.explanation("r0") is None
    ledger.dispatch(_record(5000, t=100.0))  # everything older than the TTL goes
    assert len(ledger) == 1 and ledger.expired == 100
    assert int(ledger.counters(["u"])[0][0]) == 1


def test_prefix_index_matches_shared_prefixes_per_engine() -> None:
    index = PrefixIndex(block_tokens=16, half_life_s=10.0)
    shared = text_for_tokens(160, seed=1)
    a = index.hashes(shared + text_for_tokens(64, seed=2))
    b = index.hashes(shared + text_for_tokens(64, seed=3))
    assert a[:10] == b[:10] and a[10] != b[10]
    index.insert("e1", a, now=0.0)
    matched, fresh = index.match(b, ["e0", "e1"], now=10.0)
    assert list(matched) == [0, 10] and fresh[0] == 0 and abs(fresh[1] - 0.5) < 1e-9
    matched, _ = index.match(a, ["e1"], now=10.0)
    assert list(matched) == [len(a)]


def test_prefix_index_is_bounded_per_engine_and_globally() -> None:
    index = PrefixIndex(block_tokens=16, default_capacity_blocks=50, max_total_blocks=120)
    for i in range(40):
        index.insert(f"e{i % 4}", index.hashes(text_for_tokens(16 * 20, seed=i)), now=float(i))
    assert all(index.blocks(f"e{i}") <= 50 for i in range(4))
    assert len(index) <= 120 and index.evictions > 0
    index.set_capacity_tokens("e0", 16 * 5)  # the engine reported a small KV cache
    assert index.blocks("e0") <= 5
    index.forget("e1")
    assert index.blocks("e1") == 0 and "e1" not in index.urls()
    # The newest prompt on an engine is still matched after evictions (LRU keeps recent blocks).
    last = index.hashes(text_for_tokens(16 * 20, seed=39))
    assert index.match(last, ["e3"], now=40.0)[0][0] == 20
    assert np.isfinite(index.match(last, ["e0", "e3"], now=40.0)[1]).all()
