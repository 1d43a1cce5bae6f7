"""The locality guard keeps a hot shared prefix on a few engines when the fleet's KV cache is saturated."""

from __future__ import annotations

from lodestar_vllm.policies.learned import LearnedPolicy
from tests.learned.conftest import FAST, ToyFleet


def _route_group(policy: LearnedPolicy, fleet: ToyFleet, n: int, kv: float) -> list[tuple[str, str, str]]:
    out = []
    for _ in range(n):
        req, group = fleet.request(group=0)
        decision = policy.route(req, fleet.views(kv), fleet.now)
        outcome = fleet.serve(req, group, decision.url)
        policy.on_outcome(outcome)
        out.append((decision.url, str(decision.path), decision.reason))
        fleet.tick()
        fleet.now += 1.0  # let queues drain: load alone would not concentrate the group
    return out


def test_guard_narrows_hot_prefix_on_saturated_fleet() -> None:
    fleet = ToyFleet([10000.0] * 8, shared_tokens=2048, unique_tokens=64)
    policy = LearnedPolicy(seed=0, guard_hot_count=4, guard_candidates=2, guard_kv_threshold=0.9, **FAST)
    results = _route_group(policy, fleet, 60, kv=0.97)
    guarded = results[10:]
    assert len({url for url, _, _ in guarded}) <= 2
    assert all("guarded" in reason or path == "guard" for _, path, reason in guarded)
    assert policy.guard.activations >= 50


def test_guard_stays_off_when_cache_has_room() -> None:
    fleet = ToyFleet([10000.0] * 8, shared_tokens=2048, unique_tokens=64)
    policy = LearnedPolicy(seed=0, guard_hot_count=4, guard_candidates=2, guard_kv_threshold=0.9, **FAST)
    results = _route_group(policy, fleet, 30, kv=0.2)
    assert policy.guard.activations == 0
    assert not any("guarded" in reason for _, _, reason in results)


def test_guard_choice_is_stable_across_router_replicas() -> None:
    chosen = []
    for seed in (1, 2):
        fleet = ToyFleet([10000.0] * 8, shared_tokens=2048, unique_tokens=64)
        policy = LearnedPolicy(seed=seed, guard_hot_count=4, guard_candidates=2, **FAST)
        chosen.append({url for url, _, _ in _route_group(policy, fleet, 40, kv=0.99)[10:]})
    assert chosen[0] == chosen[1]
