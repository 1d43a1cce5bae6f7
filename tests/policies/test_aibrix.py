"""AIBrix prefix-cache router: imbalance gate, prefix-match ranking with the mean + k*std load cap, index."""

import pytest

from lodestar_vllm.policies.heuristics.aibrix import AibrixPrefixLoadPolicy, PrefixHashTable

from .helpers import URLS, occupy, req, text_of, views

DOC = text_of(16 * 50, 7)  # 50 blocks of 4 tokens


def _seed_prefix(policy, url, text, cands, now=0.0):
    """Teach the index that ``url`` holds ``text`` (route with ``url`` as the only candidate), then free it."""
    only = [c for c in cands if c.url == url]
    r = req(text)
    policy.route(r, only, now)
    policy.inflight.finish(r.request_id)


def test_balanced_load_routes_to_the_best_prefix_match():
    policy = AibrixPrefixLoadPolicy(seed=0)
    cands = views(4)
    _seed_prefix(policy, URLS[2], DOC, cands)
    d = policy.route(req(DOC + text_of(64, 1)), cands, 1.0)
    assert d.url == URLS[2] and "prefix match" in d.reason


def test_higher_match_percent_wins_then_fewer_running():
    policy = AibrixPrefixLoadPolicy(seed=0, stddev_factor=10.0)  # a loose cap isolates the sort order
    cands = views(3)
    _seed_prefix(policy, URLS[0], DOC[: 16 * 20], cands)  # 20 of 50 blocks
    _seed_prefix(policy, URLS[1], DOC, cands)  # all 50
    _seed_prefix(policy, URLS[2], DOC, cands)
    occupy(policy, URLS[1], 1, cands)  # same percent: the less loaded one wins
    assert policy.route(req(DOC), cands, 1.0).url == URLS[2]


def test_imbalance_beyond_eight_flips_to_least_request():
    policy = AibrixPrefixLoadPolicy(seed=0)
    cands = views(3)
    _seed_prefix(policy, URLS[0], DOC, cands)
    occupy(policy, URLS[0], 9, cands)  # max - min = 9 > 8
    occupy(policy, URLS[1], 1, cands)
    d = policy.route(req(DOC), cands, 1.0)
    assert d.url == URLS[2] and "imbalanced" in d.reason


def test_exactly_eight_apart_is_still_balanced():
    policy = AibrixPrefixLoadPolicy(seed=0, stddev_factor=10.0)
    cands = views(3)
    _seed_prefix(policy, URLS[0], DOC, cands)
    occupy(policy, URLS[0], 8, cands)
    assert policy.route(req(DOC), cands, 1.0).url == URLS[0]


def test_matched_pod_over_mean_plus_std_is_skipped_for_least_request():
    policy = AibrixPrefixLoadPolicy(seed=0)
    cands = views(4)
    _seed_prefix(policy, URLS[0], DOC, cands)
    occupy(policy, URLS[0], 6, cands)  # loads 6,0,0,0: mean 1.5, sample std 3.0 -> cap 4.5 < 6
    d = policy.route(req(DOC), cands, 1.0)
    assert d.url != URLS[0] and "least request" in d.reason


def test_no_match_goes_to_least_request_at_random_among_ties():
    policy = AibrixPrefixLoadPolicy(seed=1)
    cands = views(3)
    occupy(policy, URLS[0], 2, cands)
    picks = {policy.route(req(text_of(400, 100 + i)), cands, 1.0).url for i in range(2)}
    assert URLS[0] not in picks


def test_index_requires_an_unbroken_prefix_and_reports_integer_percent():
    table = PrefixHashTable()
    hashes = list(range(100, 110))  # 10 blocks
    table.add(hashes[:7], "a", 0.0)
    table.add(hashes[:3], "b", 0.0)
    table.add(hashes[5:], "b", 0.0)  # b has blocks 5.. but not 3,4: its run stops at 3
    assert table.match(hashes, {"a", "b", "c"}) == {"a": 70, "b": 30}
    assert table.match(hashes, {"c"}) == {}
    assert table.match([], {"a"}) == {}


def test_index_capacity_and_ttl_evict_like_the_lru_store():
    table = PrefixHashTable(capacity=5, ttl=60.0)
    table.add([1, 2, 3], "a", 0.0)
    table.add([4, 5, 6], "a", 30.0)
    assert len(table) == 5  # block 1 evicted by capacity
    table.evict_expired(70.0)  # blocks written at t=0 (2, 3) are older than 60 s
    assert len(table) == 3
    assert table.match([4, 5, 6], {"a"}) == {"a": 100}
    assert table.match([1, 2, 3], {"a"}) == {}


def test_reads_do_not_refresh_entries():
    table = PrefixHashTable(ttl=10.0)
    table.add([1], "a", 0.0)
    table.match([1], {"a"})
    table.evict_expired(11.0)
    assert len(table) == 0


def test_short_prompts_have_no_blocks_and_use_least_request():
    policy = AibrixPrefixLoadPolicy(seed=0)
    cands = views(2)
    occupy(policy, URLS[0], 1, cands)
    assert policy.route(req("short"), cands, 0.0).url == URLS[1]


def test_bad_block_size_is_rejected():
    with pytest.raises(ValueError):
        AibrixPrefixLoadPolicy(block_size_tokens=0)


def test_forget_drops_a_pod_from_every_block():
    table = PrefixHashTable()
    table.add([1, 2, 3], "a", 0.0)
    table.add([1, 2], "b", 0.0)
    table.forget({"a"})
    assert table.match([1, 2, 3], {"a", "b"}) == {"b": 66}
    assert len(table) == 2  # block 3 was a's alone
