"""Every router-side structure stays within its cap however many distinct prompts arrive."""

import pytest

from lodestar_vllm.policies.registry import create_policy

from .helpers import finish, req, text_of, views

CASES = [
    ("aibrix-prefix-load", {"block_number": 500}, lambda p: len(p.index), 500),
    ("prefixaware", {"max_nodes": 300}, lambda p: len(p.trie), 300),
    ("llmd-default", {"lru_capacity_per_server": 100, "auto_tune": False}, lambda p: p.index.size(), 4 * 100),
    ("llmd-weighted", {"lru_capacity_per_server": 100, "auto_tune": False}, lambda p: p.index.size(), 4 * 100),
    ("dynamo-cost", {"max_blocks_per_worker": 120}, lambda p: p.index.size(), 4 * 120),
]


@pytest.mark.parametrize(("name", "options", "size", "cap"), CASES, ids=[c[0] for c in CASES])
def test_indexes_respect_their_caps(name, options, size, cap):
    policy = create_policy(name, seed=0, **options)
    cands = views(4)
    for i in range(150):
        r = req(text_of(2000, 1000 + i))
        d = policy.route(r, cands, float(i))
        finish(policy, r, d.url, float(i) + 0.5)
        assert size(policy) <= cap
    assert size(policy) > cap // 2  # the cap is reached, so the check above was not vacuous


def test_in_flight_records_are_bounded_by_ttl_when_outcomes_are_lost():
    policy = create_policy("least-request", seed=0, inflight_ttl=10.0)
    cands = views(2)
    for i in range(100):
        policy.route(req(), cands, float(i))  # never finished
    assert len(policy.inflight) <= 11


def test_cache_aware_tree_is_trimmed_to_max_tree_size():
    policy = create_policy("cache-aware", seed=0, max_tree_size=5000, eviction_interval=5.0)
    cands = views(3)
    for i in range(120):
        r = req(text_of(1500, 2000 + i))
        d = policy.route(r, cands, float(i))
        finish(policy, r, d.url, float(i) + 0.5)
    # trimmed every 5 s; at most 5 s of inserts (5 x 1500 chars) on top of the cap
    assert max(policy.tree.char_count.values()) <= 5000 + 5 * 1500
