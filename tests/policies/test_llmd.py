"""llm-d: approximate prefix index, affinity filter with its saturation override, token load, weighted scorers."""

import pytest

from lodestar_vllm.policies.heuristics.llmd import LlmdDefaultPolicy, LlmdWeightedPolicy
from lodestar_vllm.policies.heuristics.llmd_index import ApproxPrefixIndex

from .helpers import URLS, req, text_of, view, views

DOC = text_of(64 * 20, 9)  # 20 blocks of 16 tokens (64 characters)


def _teach(policy, url, text, cands, *, finish=True):
    r = req(text)
    policy.route(r, [c for c in cands if c.url == url], 0.0)
    if finish:
        policy.inflight.finish(r.request_id)
    return r


def test_index_counts_blocks_per_server_and_caps_each_server_lru():
    index = ApproxPrefixIndex(lru_capacity_per_server=4, auto_tune=False)
    hashes = list(range(10))
    index.add(hashes[:3], "a")
    index.add(hashes[:6], "b")  # b's LRU keeps its 4 most recent blocks: 2..5
    # llm-d counts, per server, every block it holds until the first block nobody holds (block 6)
    assert index.match(hashes) == {"a": 3, "b": 4}
    index.add(hashes[:2], "b")  # b re-sends blocks 0, 1, evicting 2, 3: now nobody holds block 3
    assert index.match(hashes) == {"a": 3, "b": 2}
    index.forget({"a", "b"})
    assert index.size() == 0 and index.match(hashes) == {}


def test_index_autotunes_block_size_and_capacity_from_metrics():
    index = ApproxPrefixIndex()
    assert index.block_size([view(URLS[0], block_size=32)]) == 32
    assert index.block_size([view(URLS[0], metrics=False)]) == 16
    index.add([1, 2, 3], "a", view(URLS[0], num_gpu_blocks=2))
    assert index.size() == 2


def test_index_hashes_at_most_256_blocks_and_the_partial_tail():
    index = ApproxPrefixIndex()
    assert index.hashes("x" * 63, "m", 16) == []  # shorter than one block
    assert len(index.hashes("x" * 100, "m", 16)) == 2
    assert len(index.hashes("x" * 64 * 300, "m", 16)) == 256
    assert index.hashes("abc" * 40, "m1", 16) != index.hashes("abc" * 40, "m2", 16)  # model seeds the chain


def test_default_sticks_to_the_cached_endpoint_even_when_busier():
    policy = LlmdDefaultPolicy(seed=0, exploration_probability=0.0)
    cands = views(3)
    _teach(policy, URLS[1], DOC, cands, finish=False)  # URLS[1] now carries in-flight tokens
    d = policy.route(req(DOC), cands, 1.0)
    assert d.url == URLS[1] and "sticky" in d.reason


def test_default_saturation_override_breaks_stickiness():
    policy = LlmdDefaultPolicy(seed=0, exploration_probability=0.0, max_tokens_in_flight_penalty=1000)
    cands = views(3)
    for _ in range(3):
        _teach(policy, URLS[1], DOC, cands, finish=False)  # ~3 x (320 + 480) tokens in flight
    d = policy.route(req(DOC), cands, 1.0)
    assert d.url != URLS[1] and "saturated" in d.reason


def test_default_without_sticky_endpoint_picks_the_lowest_token_load():
    policy = LlmdDefaultPolicy(seed=0, exploration_probability=0.0)
    cands = views(3)
    _teach(policy, URLS[0], text_of(4000, 1), cands, finish=False)
    _teach(policy, URLS[2], text_of(400, 2), cands, finish=False)
    d = policy.route(req(text_of(800, 3)), cands, 1.0)
    assert d.url == URLS[1] and "no sticky" in d.reason


def test_default_token_load_counts_uncached_input_plus_estimated_output():
    policy = LlmdDefaultPolicy(seed=0, exploration_probability=0.0)
    cands = views(2)
    _teach(policy, URLS[0], DOC, cands)
    r = req(DOC + "y" * 64 * 4)  # 20 cached blocks + 4 new blocks, 384 prompt tokens
    d = policy.route(r, cands, 1.0)
    assert d.url == URLS[0]
    assert policy.inflight.load(URLS[0]).held == 4 * 16 + round(384 * 1.5)


def test_default_exploration_keeps_everyone():
    policy = LlmdDefaultPolicy(seed=0, exploration_probability=1.0)
    cands = views(2)
    _teach(policy, URLS[0], DOC, cands, finish=False)
    assert "exploration" in policy.route(req(DOC), cands, 1.0).reason


def test_weighted_prefers_prefix_then_queue_then_kv():
    policy = LlmdWeightedPolicy(seed=0)
    cands = [view(URLS[0], waiting=5, kv=0.5), view(URLS[1], waiting=0, kv=0.1), view(URLS[2], waiting=5, kv=0.9)]
    _teach(policy, URLS[2], DOC, cands)
    # URLS[2]: prefix 3*1 + queue 0 + kv 2*0.1 + lru 2*0.5 = 4.2 ; URLS[1]: 0 + 2 + 1.8 + 1 = 4.8
    assert policy.route(req(DOC), cands, 1.0).url == URLS[1]
    quiet = [view(u, waiting=0, kv=0.1) for u in URLS[:3]]
    assert policy.route(req(DOC), quiet, 2.0).url == URLS[2]  # equal load: the prefix decides


def test_weighted_cold_requests_rotate_through_least_recently_used_endpoints():
    policy = LlmdWeightedPolicy(seed=0)
    cands = views(3)
    picks = [policy.route(req(text_of(200, 50 + i)), cands, float(i)).url for i in range(6)]
    assert picks[:3] == URLS[:3] and picks[3:] == URLS[:3]


def test_weighted_reads_missing_metrics_as_zero():
    policy = LlmdWeightedPolicy(seed=0)
    cands = [view(URLS[0], waiting=3, kv=0.9), view(URLS[1], metrics=False)]
    policy.route(req(text_of(300, 1)), cands[:1], 0.0)  # URLS[0] is no longer "never used"
    assert policy.route(req(text_of(300, 2)), cands, 1.0).url == URLS[1]


@pytest.mark.parametrize("bad", [{"affinity_threshold": 1.5}, {"exploration_probability": 2.0},
                                 {"max_tokens_in_flight_penalty": -1}])
def test_default_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        LlmdDefaultPolicy(**bad)
