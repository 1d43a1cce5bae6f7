"""Every baseline honours the RoutingPolicy contract on odd input, is deterministic per seed, stays bounded."""

import pytest

from lodestar_vllm.core.types import DecisionPath, InstanceView
from lodestar_vllm.policies.heuristics import inflight  # noqa: F401 - the package registers on import
from lodestar_vllm.policies.registry import POLICIES, create_policy, policy_names

from .helpers import URLS, finish, req, text_of, view, views

BASELINES = sorted(n for n in policy_names() if POLICIES[n].startswith("lodestar_vllm.policies.heuristics"))


def test_all_eleven_baselines_are_registered():
    assert BASELINES == sorted([
        "roundrobin", "session", "prefixaware", "least-request", "least-kv", "power-of-two",
        "aibrix-prefix-load", "llmd-default", "llmd-weighted", "cache-aware", "dynamo-cost",
    ])


@pytest.mark.parametrize("name", BASELINES)
def test_odd_input_gets_a_candidate_never_an_exception(name):
    policy = create_policy(name, seed=3)
    cases = [
        (req(""), views(4)),
        (req("x"), views(1)),
        (req(text_of(5000)), views(3, metrics=False)),
        (req("héllo wörld ✓ " * 50), views(2, block_size=None)),
        (req(text_of(300), prompt_tokens=0), views(2)),
        (req(text_of(300), headers={"X-User-Id": ""}), views(5)),
    ]
    for request, cands in cases:
        decision = policy.route(request, cands, 1.0)
        assert decision.url in {c.url for c in cands}
        assert decision.path == DecisionPath.HEURISTIC, decision.reason  # no fallback after an internal error
        finish(policy, request, decision.url)
    policy.close()


@pytest.mark.parametrize("name", BASELINES)
def test_unhealthy_candidates_are_avoided_while_a_healthy_one_exists(name):
    policy = create_policy(name, seed=0)
    cands = [view(URLS[0], healthy=False), view(URLS[1]), view(URLS[2], healthy=False)]
    for i in range(10):
        assert policy.route(req(text_of(200, i)), cands, float(i)).url == URLS[1]
    all_down = [view(URLS[0], healthy=False), view(URLS[1], healthy=False)]
    assert policy.route(req("x"), all_down, 20.0).url in URLS[:2]


def _trace(name: str, seed: int) -> list[str]:
    policy = create_policy(name, seed=seed)
    cands = views(6)
    urls = []
    for i in range(60):
        r = req(text_of(400 + 37 * i, i % 5), session_id=f"s{i % 7}", now=i * 0.1)
        d = policy.route(r, cands, i * 0.1)
        urls.append(d.url)
        if i % 3 == 0:
            finish(policy, r, d.url, i * 0.1 + 0.05)
    return urls


@pytest.mark.parametrize("name", BASELINES)
def test_same_seed_same_decisions(name):
    assert _trace(name, 11) == _trace(name, 11)


def test_random_policies_depend_on_the_seed():
    assert _trace("power-of-two", 1) != _trace("power-of-two", 2)


@pytest.mark.parametrize("name", BASELINES)
def test_forgotten_engines_leave_no_state(name):
    policy = create_policy(name, seed=0, forget_after=10.0)
    old = [view(f"http://old-{i}:8000") for i in range(4)]
    for i in range(20):
        policy.route(req(text_of(600, i)), old, float(i) * 0.1)  # left in flight on purpose
    new = [view(f"http://new-{i}:8000") for i in range(2)]
    for i in range(5):
        policy.route(req(text_of(600, i)), new, 100.0 + i)
    assert all(not url.startswith("http://old") for url in policy.inflight.urls())
    assert all(not url.startswith("http://old") for url in policy._last_seen)


def test_candidates_must_not_be_empty():
    with pytest.raises(ValueError):
        create_policy("roundrobin").route(req("x"), [], 0.0)


def test_a_buggy_choice_falls_back_instead_of_raising():
    policy = create_policy("least-request", seed=0)

    def broken(*args):
        raise KeyError("boom")

    policy._choose = broken
    decision = policy.route(req("x"), views(3), 0.0)
    assert decision.url == URLS[0] and decision.path == DecisionPath.FALLBACK and "boom" in decision.reason


def test_a_choice_outside_the_candidates_is_refused():
    from lodestar_vllm.policies.heuristics.tracked import Choice

    policy = create_policy("roundrobin", seed=0)
    policy._choose = lambda *a: Choice("http://elsewhere", "bad")
    cands: list[InstanceView] = views(2)
    assert policy.route(req("x"), cands, 0.0).url == URLS[0]
