"""least-request, least-kv, power-of-two: router-tracked load, scraped KV usage, seeded two-choice sampling."""

from lodestar_vllm.policies.heuristics.load_balancing import (
    LeastKvPolicy,
    LeastRequestPolicy,
    PowerOfTwoPolicy,
)

from .helpers import URLS, finish, occupy, req, view, views


def test_least_request_counts_dispatches_before_any_scrape():
    policy = LeastRequestPolicy(seed=0)
    cands = views(3)
    picks = [policy.route(req(), cands, 0.0).url for _ in range(6)]
    assert sorted(picks) == sorted(URLS[:3] * 2)  # a burst spreads evenly with no metrics at all


def test_least_request_frees_load_on_outcome():
    policy = LeastRequestPolicy(seed=0)
    cands = views(2)
    occupy(policy, URLS[0], 2, cands)
    r = req()
    assert policy.route(r, cands, 0.0).url == URLS[1]
    finish(policy, r, URLS[1])
    assert policy.inflight.requests(URLS[1]) == 0


def test_least_kv_uses_scraped_usage_then_in_flight():
    policy = LeastKvPolicy(seed=0)
    cands = [view(URLS[0], kv=0.7), view(URLS[1], kv=0.2), view(URLS[2], kv=0.2)]
    occupy(policy, URLS[1], 1, cands)
    assert policy.route(req(), cands, 0.0).url == URLS[2]


def test_least_kv_reads_unscraped_engines_as_empty():
    policy = LeastKvPolicy(seed=0)
    cands = [view(URLS[0], kv=0.3), view(URLS[1], metrics=False)]
    assert policy.route(req(), cands, 0.0).url == URLS[1]


def test_power_of_two_picks_the_less_loaded_of_two_samples():
    policy = PowerOfTwoPolicy(seed=0)
    cands = views(2)
    occupy(policy, URLS[0], 3, cands)
    assert all(policy.route(req(), cands, 0.0).url == URLS[1] for _ in range(3))


def test_power_of_two_never_picks_the_most_loaded_of_three():
    policy = PowerOfTwoPolicy(seed=4)
    cands = views(3)
    occupy(policy, URLS[2], 50, cands)
    picks = {policy.route(req(), cands, 0.0).url for _ in range(20)}
    assert URLS[2] not in picks
