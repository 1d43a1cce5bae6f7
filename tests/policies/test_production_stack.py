"""production-stack built-ins: roundrobin, session, prefixaware and their _qps_routing fallback."""

from collections import Counter

import pytest

from lodestar_vllm.policies.heuristics.hashring import HashRing
from lodestar_vllm.policies.heuristics.prefixaware import HashTrie, PrefixAwarePolicy
from lodestar_vllm.policies.heuristics.qps import ArrivalRates, qps_routing
from lodestar_vllm.policies.heuristics.roundrobin import RoundRobinPolicy
from lodestar_vllm.policies.heuristics.session import SessionPolicy

from .helpers import URLS, req, text_of, views


def test_roundrobin_cycles_sorted_urls_whatever_the_candidate_order():
    policy = RoundRobinPolicy()
    cands = list(reversed(views(3)))
    assert [policy.route(req(), cands, 0.0).url for _ in range(6)] == [URLS[0], URLS[1], URLS[2]] * 2


def test_qps_routing_prefers_an_engine_never_used_then_the_lowest_rate():
    rates = ArrivalRates(window=10.0)
    cands = views(3)
    for t in (0.0, 1.0, 2.0):
        rates.record(URLS[0], t)
    rates.record(URLS[1], 2.0)
    assert qps_routing(cands, rates, 3.0) == URLS[2]  # never sent a request
    rates.record(URLS[2], 3.0)
    rates.record(URLS[2], 3.5)
    assert qps_routing(cands, rates, 4.0) == URLS[1]  # 1 arrival vs 3 and 2
    # arrivals older than the window no longer count: at t=12.5 only URLS[2]'s two remain
    assert qps_routing(cands, rates, 12.5) == URLS[0]


def test_qps_routing_ignores_in_flight_load():
    policy = SessionPolicy(request_stats_window=60.0)
    cands = views(2)
    first = policy.route(req(), cands, 0.0).url
    second = policy.route(req(), cands, 0.1).url
    assert {first, second} == set(URLS[:2])


def test_session_is_sticky_by_header_and_by_session_id():
    policy = SessionPolicy()
    cands = views(4)
    by_header = {policy.route(req(headers={"X-User-Id": "alice"}), cands, float(t)).url for t in range(5)}
    by_field = {policy.route(req(session_id="alice"), cands, float(t)).url for t in range(5)}
    assert len(by_header) == 1 and by_header == by_field


def test_session_key_is_configurable_and_header_wins_over_session_id():
    policy = SessionPolicy(session_key="x-session")
    cands = views(4)
    ring = HashRing()
    ring.set_nodes(URLS[:4])
    assert policy.route(req(headers={"x-session": "k1"}, session_id="k2"), cands, 0.0).url == ring.get_node("k1")


def test_hash_ring_moves_only_the_keys_of_a_removed_node():
    ring = HashRing()
    ring.set_nodes(URLS[:4])
    before = {f"user{i}": ring.get_node(f"user{i}") for i in range(400)}
    assert len(set(before.values())) == 4
    ring.set_nodes(URLS[:3])
    after = {k: ring.get_node(k) for k in before}
    moved = [k for k in before if before[k] != after[k]]
    assert moved and all(before[k] == URLS[3] for k in moved)


def test_prefixaware_routes_to_the_longest_match():
    policy = PrefixAwarePolicy(seed=0)
    cands = views(4)
    doc = text_of(128 * 10, 1)
    # engine A was sent 10 chunks of the doc, engine B only its first 3 chunks
    a = policy.route(req(doc), [cands[0]], 0.0).url
    b = policy.route(req(doc[: 128 * 3]), [cands[1]], 0.0).url
    assert (a, b) == (URLS[0], URLS[1])
    for t in range(5):
        d = policy.route(req(doc + text_of(500, 100 + t)), cands, 1.0 + t)
        assert d.url == URLS[0], d.reason


def test_prefixaware_breaks_ties_at_random_among_the_longest_matches():
    policy = PrefixAwarePolicy(seed=5)
    cands = views(3)
    doc = text_of(128 * 4, 2)
    for c in cands:
        policy.route(req(doc), [c], 0.0)
    picks = Counter(policy.route(req(doc + text_of(64, t)), cands, 1.0).url for t in range(60))
    assert set(picks) == set(URLS[:3])


def test_prefixaware_falls_back_to_qps_below_the_min_match_length_and_still_records():
    policy = PrefixAwarePolicy(prefix_min_match_length=128 * 4)
    cands = views(2)
    doc = text_of(128 * 3, 3)  # a 3-chunk match is below the 4-chunk minimum
    policy.route(req(doc), [cands[0]], 0.0)
    d = policy.route(req(doc), cands, 1.0)
    assert d.url == URLS[1] and "min" in d.reason  # never-used engine wins the qps fallback
    # recorded despite the fallback: a long prompt now matches on URLS[1] by 4+ chunks
    long_doc = text_of(128 * 6, 4)
    policy.route(req(long_doc), [cands[1]], 2.0)
    assert policy.route(req(long_doc), cands, 3.0).url == URLS[1]


def test_hash_trie_is_bounded_and_forgets_engines():
    trie = HashTrie(chunk_size=8, max_nodes=50)
    for i in range(40):
        trie.insert(trie.hashes(text_of(80, i)), URLS[i % 2])
    assert len(trie) == 50
    trie.forget({URLS[0], URLS[1]})
    assert len(trie) == 0


def test_hash_trie_counts_the_partial_last_chunk_like_upstream():
    trie = HashTrie(chunk_size=128)
    assert len(trie.hashes("a" * 129)) == 2 and len(trie.hashes("")) == 0


@pytest.mark.parametrize("bad", [{"chunk_size": 0}, {"max_nodes": 0}])
def test_prefixaware_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        PrefixAwarePolicy(**bad)
