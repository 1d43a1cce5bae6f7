"""SGLang cache_aware: balance thresholds, match-rate rule, smallest-tree rule, radix tree and its eviction."""

from lodestar_vllm.policies.heuristics.cache_aware import CacheAwarePolicy
from lodestar_vllm.policies.heuristics.radix_tree import RadixTree

from .helpers import URLS, occupy, req, text_of, views

DOC = text_of(2000, 5)


def _used_size(tree: RadixTree) -> dict[str, int]:
    sizes: dict[str, int] = {}
    stack = [tree.root]
    while stack:
        node = stack.pop()
        for tenant in node.tenants:
            sizes[tenant] = sizes.get(tenant, 0) + len(node.text)
        stack.extend(node.children.values())
    return sizes


def test_tree_matches_and_splits_like_upstream():
    tree = RadixTree()
    tree.insert("hello", "t1")
    tree.insert("apple", "t2")
    tree.insert("apricot", "t3")  # splits "apple" at "ap"
    assert tree.prefix_match("hello world") == (5, "t1")
    assert tree.prefix_match("apple") == (5, "t2")
    assert tree.prefix_match("apricot!") == (7, "t3")
    assert tree.prefix_match("apx")[0] == 2  # partial match stops inside the node
    # no match: upstream still answers the root's first tenant (every insert passes through the root)
    assert tree.prefix_match("zzz") == (0, "t1")
    assert RadixTree().prefix_match("zzz") == (0, None)


def test_tree_char_counts_match_a_full_recount_through_inserts_and_eviction():
    tree = RadixTree()
    for word, tenant in [("apple", "t1"), ("apricot", "t1"), ("banana", "t1"), ("amplify", "t2"),
                         ("application", "t2"), ("apartment", "t1"), ("zebra", "t1"), ("zebra", "t2")]:
        tree.insert(word, tenant)
    assert tree.char_count == _used_size(tree)
    tree.evict_tenant_by_size(10)
    assert tree.char_count == {t: _used_size(tree).get(t, 0) for t in tree.char_count}
    assert all(count <= 10 for count in tree.char_count.values())


def test_eviction_removes_least_recently_used_leaves_first():
    tree = RadixTree()
    tree.insert("aaaa", "t")
    tree.insert("bbbb", "t")
    tree.prefix_match("aaaa")  # refreshes "aaaa"
    tree.evict_tenant_by_size(4)
    assert tree.prefix_match("aaaa") == (4, "t") and tree.prefix_match("bbbb")[0] == 0


def test_remove_tenant_prunes_its_nodes():
    tree = RadixTree()
    tree.insert("shared prefix one", "t1")
    tree.insert("shared prefix two", "t2")
    tree.remove_tenant("t1")
    assert "t1" not in tree.char_count
    assert tree.prefix_match("shared prefix one") == (len("shared prefix "), "t2")
    tree.remove_tenant("t2")
    assert tree.node_count() == 1


def test_cache_hit_above_half_routes_to_the_matching_worker():
    policy = CacheAwarePolicy(seed=0)
    cands = views(3)
    policy.route(req(DOC), [cands[1]], 0.0)
    d = policy.route(req(DOC + text_of(500, 6)), cands, 1.0)  # 2000 of 2500 chars match: 0.8 > 0.5
    assert d.url == URLS[1] and "cache hit" in d.reason


def test_low_match_rate_routes_to_the_smallest_tree():
    policy = CacheAwarePolicy(seed=0)
    cands = views(3)
    policy.route(req(DOC), [cands[0]], 0.0)
    policy.route(req(text_of(500, 8)), [cands[1]], 0.0)
    d = policy.route(req(DOC[:600] + text_of(2000, 7)), cands, 1.0)  # 600 / 2600 < 0.5
    assert d.url == URLS[2] and "smallest tree" in d.reason


def test_imbalance_needs_both_the_absolute_and_relative_gap():
    policy = CacheAwarePolicy(seed=0)
    cands = views(3)
    policy.route(req(DOC), [cands[0]], 0.0)
    occupy(policy, URLS[0], 40, cands)
    occupy(policy, URLS[1], 10, cands)
    occupy(policy, URLS[2], 10, cands)
    # max - min = 31 (with the DOC request) is not > 32: still cache-aware
    assert policy.route(req(DOC), cands, 1.0).url == URLS[0]
    occupy(policy, URLS[0], 5, cands)  # 47 vs 10: > 32 and > 1.1 x 10 -> shortest queue
    d = policy.route(req(DOC), cands, 2.0)
    assert d.url == URLS[1] and "imbalanced" in d.reason  # first of the least loaded


def test_relative_threshold_alone_keeps_cache_routing():
    policy = CacheAwarePolicy(seed=0, balance_rel_threshold=10.0)
    cands = views(2)
    policy.route(req(DOC), [cands[0]], 0.0)
    occupy(policy, URLS[0], 60, cands)
    occupy(policy, URLS[1], 20, cands)  # gap 41 > 32 but 61 < 10 x 20
    assert policy.route(req(DOC), cands, 1.0).url == URLS[0]


def test_periodic_eviction_bounds_each_tree():
    policy = CacheAwarePolicy(seed=0, eviction_interval=10.0, max_tree_size=3000)
    cands = views(2)
    for i in range(30):
        r = req(text_of(1000, 200 + i))
        d = policy.route(r, cands, float(i))
        policy.inflight.finish(r.request_id)
        assert d.url in URLS[:2]
    assert all(count <= 3000 + 1000 * 10 for count in policy.tree.char_count.values())
    policy.route(req("x"), cands, 100.0)
    assert all(count <= 3000 + 1 for count in policy.tree.char_count.values())
