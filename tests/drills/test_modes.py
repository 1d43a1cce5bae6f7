"""Shadow mode and the guardrail, exercised through the adapter (stand-in host), observed on /lodestar/status,
/lodestar/explain and /metrics."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY

from lodestar_vllm.policies.learned import policy as policy_mod
from tests.drills.conftest import FAST_LEARNED, completion, engines, router, settled, wait_for
from tests.drills.faults import slow_down


@pytest.mark.slow
def test_shadow_mode_routes_with_the_fallback_and_records_the_model() -> None:
    """Must hold: with `learned-shadow`, every decision reaches the host as a fallback decision, while the policy
    predicts and records what the model would have chosen (status paths, explain's model_choice, metrics)."""
    before = REGISTRY.get_sample_value("lodestar_decisions_total", {"path": "shadow"}) or 0.0
    with engines(2) as es, router([e.url for e in es], policy="learned-shadow", options=FAST_LEARNED) as r:
        with httpx.Client(base_url=r.url, timeout=30) as client:
            for i in range(50):
                assert client.post("/v1/completions", json=completion(f"s {i} " * 20)).status_code == 200
            wait_for(lambda: r.runtime.policy.model is not None, 60, "a first model")
            # A young model judges only inputs inside its training ranges (the rest are out-of-distribution
            # fallbacks), so send bounded traffic until the first shadow decision; that request is explained.
            last = None
            for i in range(200):
                client.post("/v1/completions", json=completion(f"t {i} " * 20), headers={"X-Request-Id": f"sh-{i}"})
                if r.status()["policy_status"]["paths"].get("shadow", 0) >= 1:
                    last = f"sh-{i}"
                    break
            assert last is not None, "no shadow decision in 200 requests after the first model"
            explain = client.get(f"/lodestar/explain/{last}").json()
        wait_for(lambda: settled(r), 10, "outcomes")
        status = r.status()
    assert status["policy_status"]["shadow"] is True
    assert status["policy_status"]["paths"].get("shadow", 0) >= 1
    assert status["policy_status"]["paths"].get("model", 0) == 0  # nothing was routed by the model
    assert explain["attempts"][-1]["path"] == "fallback"
    assert "model_choice" in explain["attempts"][-1]["policy"]
    assert (REGISTRY.get_sample_value("lodestar_decisions_total", {"path": "shadow"}) or 0.0) > before


@pytest.mark.slow
async def test_guardrail_trips_when_the_model_routes_badly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Must hold: when the model's choices are worse than the fallback's (here: its predictions are inverted, so
    it prefers a 20x slower engine), the guardrail compares it with the control arm, trips, and routes with the
    fallback; /lodestar/status and lodestar_guardrail_active say so."""
    real_predict = policy_mod.predict

    def inverted(model, matrix):  # noqa: ANN001, ANN202 - the same signature as predict
        mean, spread = real_predict(model, matrix)
        return -mean, spread

    options = {**FAST_LEARNED, "guardrail_control_fraction": 0.3, "guardrail_window": 16,
               "guardrail_control_samples": 30, "guardrail_margin": 0.2, "explore_initial": 0.0,
               "explore_min": 0.0, "refit_every_samples": 10_000}
    with engines(2) as (slow, fast), router([slow.url, fast.url], options=options) as r:
        async with httpx.AsyncClient(base_url=r.url, timeout=60) as client:
            await _load(client, "warm", 50)
            assert slow.faults.loop is not None
            slow_down(slow.served.engine, slow.faults.loop, 20.0)
            wait_for(lambda: r.runtime.policy.model is not None, 60, "a first model")
            monkeypatch.setattr(policy_mod, "predict", inverted)
            for round_ in range(12):  # bounded: 12 x 40 requests at most
                await _load(client, f"bad{round_}", 40)
                if r.runtime.policy.guardrail.active:
                    break
            wait_for(lambda: settled(r), 20, "outcomes")
            status = r.status()
    guardrail = status["policy_status"]["guardrail"]
    assert guardrail["active"] and guardrail["trips"] >= 1, guardrail
    assert REGISTRY.get_sample_value("lodestar_guardrail_active") == 1.0
    model_mean, control_mean, _ = r.runtime.policy.guardrail.last_comparison
    print(f"\nguardrail drill: tripped after {round_ + 1} rounds; model-arm mean TTFT {model_mean:.3f} s vs "
          f"control {control_mean:.3f} s")
    assert model_mean > control_mean
    assert np.isfinite(model_mean)


async def _load(client: httpx.AsyncClient, tag: str, n: int, workers: int = 4) -> None:
    items = iter(range(n))

    async def worker() -> None:
        for i in items:
            response = await client.post("/v1/completions", json=completion(f"{tag} {i} " * 300, max_tokens=4))
            assert response.status_code == 200

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(workers))), 120)
