"""Behaviour of the learned policy on a toy fleet: cold start, learning, OOD, shadow, determinism, safety."""

from __future__ import annotations

import json
import math

import numpy as np

from lodestar_vllm.core.types import DecisionPath, EngineMetrics, InstanceView, RequestInfo
from lodestar_vllm.policies.learned import LearnedPolicy
from lodestar_vllm.policies.registry import create_policy, policy_names
from lodestar_vllm.tokenizer import text_for_tokens
from tests.learned.conftest import FAST, ToyFleet, drive


def test_registered_names_create_policies() -> None:
    assert {"learned", "learned-shadow"} <= set(policy_names())
    policy = create_policy("learned", seed=3, **FAST)
    assert isinstance(policy, LearnedPolicy) and not policy.shadow
    shadow = create_policy("learned-shadow", seed=3)
    assert isinstance(shadow, LearnedPolicy) and shadow.shadow


def test_cold_start_routes_with_fallback(fleet: ToyFleet) -> None:
    policy = LearnedPolicy(seed=0, **FAST)
    req, _ = fleet.request()
    decision = policy.route(req, fleet.views(), fleet.now)
    assert decision.url in {e.url for e in fleet.engines}
    assert decision.path == DecisionPath.FALLBACK and decision.reason == "cold_start"
    # The fallback prefers the fast engines (higher prior-free rate is unknown at first: load/prefix decide).
    explanation = policy.explain(req.request_id)
    assert explanation is not None and explanation["chosen"] == decision.url
    assert len(explanation["candidates"]) == 4


def test_learns_then_routes_by_model_and_predicts_speed(fleet: ToyFleet) -> None:
    policy = LearnedPolicy(seed=1, **FAST)
    results = drive(policy, fleet, 400)
    status = policy.status()
    assert status["model"] is not None and status["trainer"]["accepted"] >= 1
    late_paths = [p for _, p, _ in results[-100:]]
    assert late_paths.count("model") + late_paths.count("exploration") >= 80
    # The router learned (without labels or profiles) that the H100 engines are faster than its prior.
    # An idle fleet and a prefix nobody has cached: only the engines' speed differs.
    fleet.now += 60.0
    fleet._prefix[99] = text_for_tokens(1024, seed=4242)
    req, _ = fleet.request(group=99)
    policy.route(req, fleet.views(), fleet.now)
    cands = {c["url"]: c for c in policy.explain(req.request_id)["candidates"]}
    assert all(c["matched_tokens"] == 0 for c in cands.values())
    fast = [cands[e.url]["analytic_ttft_s"] for e in fleet.engines[:2]]
    slow = [cands[e.url]["analytic_ttft_s"] for e in fleet.engines[2:]]
    assert min(slow) > 1.5 * max(fast)
    assert status["rates"]["per_class"]["H100"]["prefill_tokens_per_s"] > policy.config.prior_prefill_tokens_per_s
    # And the engine it picks is a fast one.
    assert policy.explain(req.request_id)["chosen"] in {e.url for e in fleet.engines[:2]}
    # status() and explain() are plain JSON (served by the host's endpoints).
    json.dumps(status, allow_nan=False)
    json.dumps(policy.explain(req.request_id), allow_nan=False)
    # Prediction error shrinks to something useful on this easy fleet.
    assert status["recent_accuracy"]["mean_abs_log_ratio"] < 0.7


def test_learned_beats_random_choice_on_heterogeneous_fleet() -> None:
    fleet = ToyFleet([30000.0, 3000.0, 3000.0], gpus=["H100", "L4", "L4"])
    policy = LearnedPolicy(seed=2, **FAST)
    results = drive(policy, fleet, 500)
    learned_late = float(np.mean([t for *_, t in results[-150:]]))
    rng = np.random.default_rng(0)
    fleet_r = ToyFleet([30000.0, 3000.0, 3000.0], gpus=["H100", "L4", "L4"])
    rand = []
    for _ in range(500):
        req, g = fleet_r.request()
        out = fleet_r.serve(req, g, fleet_r.engines[int(rng.integers(3))].url)
        rand.append(out.ttft)
        fleet_r.tick()
    assert learned_late < 0.7 * float(np.mean(rand[-150:]))


def test_out_of_distribution_input_falls_back(fleet: ToyFleet) -> None:
    policy = LearnedPolicy(seed=1, **FAST)
    drive(policy, fleet, 200)
    assert policy.model is not None
    req, _ = fleet.request(tokens_scale=2000.0)  # a prompt ~500x longer than anything seen
    decision = policy.route(req, fleet.views(), fleet.now)
    assert decision.path == DecisionPath.FALLBACK and decision.reason == "out_of_distribution"


def test_same_seed_same_decisions_inline() -> None:
    runs = []
    for _ in range(2):
        fleet = ToyFleet([20000.0, 8000.0, 4000.0], gpus=["H100", "A100", "L4"])
        policy = LearnedPolicy(seed=7, **FAST)
        runs.append(drive(policy, fleet, 250))
        assert policy.model is not None
    assert runs[0] == runs[1]


def test_shadow_routes_like_fallback_and_switches_at_runtime(fleet: ToyFleet) -> None:
    policy = LearnedPolicy(seed=1, shadow=True, **FAST)
    results = drive(policy, fleet, 250)
    assert policy.model is not None
    assert all(path == "fallback" for _, path, _ in results)
    req, g = fleet.request()
    decision = policy.route(req, fleet.views(), fleet.now)
    explained = policy.explain(req.request_id)
    assert explained["path"] == "shadow" and explained["chosen"] == explained["fallback_choice"] == decision.url
    assert "model_choice" in explained and decision.predicted_ttft is not None
    assert policy.status()["shadow_predicted_gain_s"] is not None
    policy.on_outcome(fleet.serve(req, g, decision.url))
    policy.set_shadow(False)
    paths = {p for _, p, _ in drive(policy, fleet, 50)}
    assert paths & {"model", "exploration", "guard"}


def test_never_raises_and_returns_a_candidate() -> None:
    policy = LearnedPolicy(seed=0, **FAST)
    weird = [
        InstanceView("http://a", EngineMetrics(scraped_at=math.nan, num_running=math.inf, kv_cache_usage=-3.0)),
        InstanceView("http://b", None, None, healthy=False),
    ]
    for i, text in enumerate(["", "x" * 10, "é" * 5000]):
        req = RequestInfo(request_id=f"w{i}", model="m", prompt_text=text, arrival_time=0.0, prompt_tokens=0,
                          max_tokens=-5)
        decision = policy.route(req, weird, now=float(i))
        assert decision.url in {"http://a", "http://b"}
    # An object that is not a RequestInfo at all still yields a candidate (and a fallback reason).
    decision = policy.route(object(), weird, now=5.0)  # type: ignore[arg-type]
    assert decision.url in {"http://a", "http://b"} and decision.path == DecisionPath.FALLBACK
    # Unhealthy engines are avoided when a healthy one exists.
    req = RequestInfo(request_id="h", model="m", prompt_text="hello " * 100, arrival_time=0.0)
    assert policy.route(req, weird, now=6.0).url == "http://a"
    policy.on_outcome(object())  # type: ignore[arg-type]  # bad feedback is logged, not raised
    policy.close()
