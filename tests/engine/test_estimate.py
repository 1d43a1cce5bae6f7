"""``estimate_ttft``: the oracle's what-if agrees with what the engine then does, and changes nothing."""

from __future__ import annotations

import random

import pytest

from lodestar_vllm.sim.engine import EngineCore, EngineRequest
from lodestar_vllm.sim.profiles import default_engine_config, get_profile
from lodestar_vllm.tokenizer import text_for_tokens
from tests.engine.conftest import make_engine, request, run_to_end


def _measured_ttft(engine: EngineCore, prompt_len: int, now: float) -> float:
    engine.add_request(EngineRequest("probe", prompt_len, 3, [], now))
    t = now
    for _ in range(100_000):
        result = engine.step(t)
        t += result.duration
        if "probe" in result.first_token:
            return t - now
    raise AssertionError("probe never got its first token")


@pytest.mark.parametrize("seats", [2, 4, 256])
@pytest.mark.parametrize("seed", range(5))
def test_estimate_tracks_the_ttft_the_engine_then_gives(seed: int, seats: int) -> None:
    rng = random.Random(seed)
    config = default_engine_config("A100", max_num_seqs=seats)
    engine = EngineCore(get_profile("A100", "llama-3.1-8b"), config)
    for i in range(rng.randint(0, 40 if seats > 8 else 12)):
        engine.add_request(EngineRequest(f"x{i}", rng.randint(100, 3000), rng.randint(10, 300), [], 0.0))
    now = 0.0
    for _ in range(rng.randint(0, 30)):
        if engine.has_unfinished():
            now += engine.step(now).duration
    prompt_len = rng.randint(100, 3000)
    estimate = engine.estimate_ttft(prompt_len, [], now)
    actual = _measured_ttft(engine, prompt_len, now)
    assert estimate == pytest.approx(actual, rel=0.2)


def test_estimate_sees_queues_and_prefix_hits_without_changing_anything() -> None:
    engine = make_engine()
    shared = text_for_tokens(1000, seed=5)
    engine.add_request(request("warm", shared, max_tokens=1))
    end = run_to_end(engine)
    probe = request("p", shared + text_for_tokens(20, seed=6))
    cold = request("c", text_for_tokens(1020, seed=7))
    before = (engine.stats(), engine.pool.free_order())
    hot_estimate = engine.estimate_ttft(probe.prompt_len, probe.block_hashes, end)
    cold_estimate = engine.estimate_ttft(cold.prompt_len, cold.block_hashes, end)
    assert hot_estimate < cold_estimate
    assert (engine.stats(), engine.pool.free_order()) == before
    for i in range(6):
        engine.add_request(EngineRequest(f"q{i}", 2000, 10, [], end))
    assert engine.estimate_ttft(cold.prompt_len, cold.block_hashes, end) > 3 * cold_estimate
