"""Prefix caching as vLLM V1 does it: full blocks only, last prompt token recomputed, LRU eviction."""

from __future__ import annotations

from lodestar_vllm.sim.engine import EngineRequest
from lodestar_vllm.sim.kv_cache import BlockPool
from lodestar_vllm.tokenizer import text_block_hashes, text_for_tokens
from tests.engine.conftest import make_engine, request, run_to_end


def test_repeated_prompt_hits_all_full_blocks() -> None:
    engine = make_engine()
    text = text_for_tokens(100, seed=1)  # 6 full blocks + 4 tokens
    engine.add_request(request("a", text))
    run_to_end(engine)
    assert engine.cached_tokens("a") == 0
    engine.add_request(request("b", text))
    run_to_end(engine)
    assert engine.cached_tokens("b") == 96
    stats = engine.stats()
    assert stats.prefix_cache_queries_total == 200
    assert stats.prefix_cache_hits_total == 96
    assert stats.prompt_tokens_total == 200


def test_partially_shared_prompt_hits_the_shared_blocks_only() -> None:
    engine = make_engine()
    shared = text_for_tokens(70, seed=7)  # 4 full blocks (64 tokens) + 6 shared tokens of the 5th block
    engine.add_request(request("a", shared + text_for_tokens(50, seed=8)))
    run_to_end(engine)
    engine.add_request(request("b", shared + text_for_tokens(50, seed=9)))
    run_to_end(engine)
    assert engine.cached_tokens("b") == 64


def test_last_prompt_token_is_always_recomputed() -> None:
    engine = make_engine()
    exact = text_for_tokens(64, seed=3)  # exactly 4 blocks: the 4th cannot hit
    engine.add_request(request("a", exact))
    run_to_end(engine)
    engine.add_request(request("b", exact))
    run_to_end(engine)
    assert engine.cached_tokens("b") == 48

    longer = exact + text_for_tokens(1, seed=4)  # 65 tokens: all 4 blocks may hit
    engine.add_request(request("c", longer))
    run_to_end(engine)
    assert engine.cached_tokens("c") == 64


def test_concurrent_requests_share_cached_blocks() -> None:
    engine = make_engine()
    text = text_for_tokens(80, seed=11)
    engine.add_request(request("a", text, max_tokens=50))
    engine.step(0.0)  # a's prompt blocks are registered when scheduled
    engine.add_request(request("b", text, max_tokens=50))
    engine.step(1.0)
    assert engine.cached_tokens("b") == 64
    # Shared blocks count once: a holds 6 blocks (80 prompt tokens + the decode token at position 80);
    # b reuses a's first 4 and recomputes its 5th block itself (last prompt token) -> 1 more.
    assert round(engine.stats().kv_cache_usage * 1000) == 7


def test_pool_evicts_least_recently_freed_and_request_tails_first() -> None:
    pool = BlockPool(6)
    a: list[int] = []
    b: list[int] = []
    pool.allocate(3, a)
    pool.allocate(3, b)
    for i, blk in enumerate(a):
        pool.cache_block(blk, 100 + i)
    for i, blk in enumerate(b):
        pool.cache_block(blk, 200 + i)
    pool.free(a)  # a finished first: its blocks, tail first, are the oldest free ones
    pool.free(b)
    assert pool.free_order() == [a[2], a[1], a[0], b[2], b[1], b[0]]
    got: list[int] = []
    pool.allocate(2, got)
    assert not pool.is_cached(102) and not pool.is_cached(101)
    assert pool.is_cached(100) and pool.is_cached(200)
    # A hit takes a free cached block out of the queue; it is not evicted next.
    pool.touch(pool.match_prefix([200, 201, 202], 3))
    pool.allocate(1, got)
    assert not pool.is_cached(100)
    assert pool.num_free == 0


def test_engine_eviction_keeps_the_most_recently_used_prefix() -> None:
    # 12 blocks: each 48-token prompt + 2 outputs holds 4 blocks (3 full prompt blocks cached).
    engine = make_engine(num_gpu_blocks=12)
    texts = {name: text_for_tokens(48, seed=seed) for name, seed in (("x", 1), ("y", 2), ("z", 3))}
    for name in ("x", "y", "z"):
        engine.add_request(request(name, texts[name], max_tokens=2))
        run_to_end(engine)
    # A new 128-token prompt needs 8 blocks: the least recently freed are x's 4 (freed first), then y's 4.
    engine.add_request(request("big", text_for_tokens(128, seed=4), max_tokens=1))
    run_to_end(engine)
    engine.add_request(request("z2", texts["z"], max_tokens=1))
    engine.add_request(request("x2", texts["x"], max_tokens=1))
    run_to_end(engine)
    assert engine.cached_tokens("z2") == 32  # (48 - 1) // 16 full blocks may hit
    assert engine.cached_tokens("x2") == 0


def test_prefix_caching_off_never_hits() -> None:
    engine = make_engine(enable_prefix_caching=False)
    text = text_for_tokens(100, seed=1)
    for rid in ("a", "b"):
        engine.add_request(request(rid, text))
        run_to_end(engine)
    assert engine.cached_tokens("b") == 0
    assert engine.stats().prefix_cache_hits_total == 0


def _turns(reply_hashed: bool) -> int:
    engine = make_engine()
    prompt = text_for_tokens(40, seed=21)
    reply = text_for_tokens(40, seed=22)
    hashed_text = prompt + reply if reply_hashed else prompt
    first = EngineRequest("t1", 40, 40, text_block_hashes(hashed_text, 16), 0.0)
    engine.add_request(first)
    run_to_end(engine)
    follow = prompt + reply + text_for_tokens(30, seed=23)
    engine.add_request(request("t2", follow))
    run_to_end(engine)
    return engine.cached_tokens("t2")


def test_a_hashed_reply_is_cached_for_the_next_turn() -> None:
    # 40 prompt + 40 reply tokens: 79 computed (the last sampled token never is) -> 4 full blocks cached.
    assert _turns(reply_hashed=True) == 64
    assert _turns(reply_hashed=False) == 32  # only the prompt's 2 full blocks


def test_reply_blocks_computed_before_an_abort_stay_cached() -> None:
    engine = make_engine()
    prompt = text_for_tokens(40, seed=31)
    reply = text_for_tokens(80, seed=32)
    engine.add_request(EngineRequest("a", 40, 80, text_block_hashes(prompt + reply, 16), 0.0))
    now = 0.0
    for _ in range(31):  # prefill + 30 decode steps: 70 tokens computed -> 4 full blocks
        now += engine.step(now).duration
    assert engine.abort_request("a")
    engine.add_request(request("b", prompt + reply[: 40 * 4] + text_for_tokens(10, seed=33)))
    run_to_end(engine, now)
    assert engine.cached_tokens("b") == 64
