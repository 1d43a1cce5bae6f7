"""Dynamo KV router: cost arithmetic, overlap index with TTL, prefill release at first token, temperature."""

import pytest

from lodestar_vllm.policies.heuristics.dynamo import ApproxKvIndex, DynamoCostPolicy

from .helpers import URLS, req, text_of, views

BLOCK_CHARS = 16 * 4


def test_cost_is_prefill_blocks_plus_decode_blocks():
    policy = DynamoCostPolicy(seed=0)
    cands = views(2)
    doc = text_of(BLOCK_CHARS * 10, 1)  # 160 tokens, 10 blocks
    warm = req(doc)
    policy.route(warm, [cands[0]], 0.0)  # in flight on URLS[0]: 160 prefill tokens, 10 blocks held
    new = req(doc + text_of(BLOCK_CHARS * 2, 2))  # 12 blocks, the first 10 cached on URLS[0]
    costs = policy.costs(new, cands, 1.0)
    assert costs[URLS[0]] == pytest.approx((160 + 2 * 16) / 16 + 10)  # 22
    assert costs[URLS[1]] == pytest.approx(12)
    assert policy.route(new, cands, 1.0).url == URLS[1]
    policy.on_first_token(warm.request_id, URLS[0], 1.5)  # prefill done: its 160 tokens leave the cost
    again = req(doc + text_of(BLOCK_CHARS * 2, 3))
    assert policy.costs(again, cands, 2.0)[URLS[0]] == pytest.approx(2 + 10)


def test_overlap_weight_scales_the_prefill_term():
    policy = DynamoCostPolicy(seed=0, overlap_score_weight=0.5)
    cands = views(1)
    r = req(text_of(BLOCK_CHARS * 4, 4))
    assert policy.costs(r, cands, 0.0)[URLS[0]] == pytest.approx(0.5 * 4)


def test_cached_prefix_wins_when_loads_are_equal():
    policy = DynamoCostPolicy(seed=0)
    cands = views(3)
    doc = text_of(BLOCK_CHARS * 20, 5)
    first = req(doc)
    policy.route(first, [cands[2]], 0.0)
    policy.inflight.finish(first.request_id)
    assert policy.route(req(doc), cands, 1.0).url == URLS[2]


def test_overlap_index_expires_after_ttl_and_counts_leading_blocks_only():
    index = ApproxKvIndex(ttl=120.0)
    index.add([1, 2, 3], "w", 0.0)
    index.add([5], "w", 100.0)
    assert index.overlap([1, 2, 3, 4], "w", 50.0) == 3
    assert index.overlap([1, 4, 5], "w", 50.0) == 1  # stops at the first missing block
    assert index.overlap([1, 2, 3], "w", 121.0) == 0
    assert index.overlap([5], "w", 121.0) == 1


def test_overlap_index_is_capped_per_worker():
    index = ApproxKvIndex(max_blocks_per_worker=3)
    index.add(list(range(10)), "w", 0.0)
    assert index.size() == 3


def test_ties_are_broken_at_random_and_temperature_spreads_choices():
    cands = views(4)
    greedy = DynamoCostPolicy(seed=0)
    picks = {greedy.route(req(text_of(BLOCK_CHARS, 10 + i)), cands, 0.0).url for i in range(4)}
    assert picks == set(URLS[:4])  # each pick adds load, so four cold requests spread over four workers
    hot = DynamoCostPolicy(seed=0, temperature=100.0)
    doc = text_of(BLOCK_CHARS * 20, 6)
    hot.route(req(doc), [cands[0]], 0.0)
    picks = {hot.route(req(doc), cands, 1.0).url for _ in range(40)}
    assert len(picks) > 1


def test_engine_block_size_is_used_when_scraped():
    policy = DynamoCostPolicy(seed=0)
    r = req(text_of(32 * 4 * 3, 7))  # 96 tokens
    assert policy.costs(r, views(1, block_size=32), 0.0)[URLS[0]] == pytest.approx(3)
    assert policy.costs(r, views(1, metrics=False), 0.0)[URLS[0]] == pytest.approx(6)


def test_forget_drops_a_worker_index():
    index = ApproxKvIndex()
    index.add([1, 2], "w", 0.0)
    index.forget({"w"})
    assert index.size() == 0 and index.overlap([1, 2], "w", 0.0) == 0
