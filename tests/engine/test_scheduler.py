"""Continuous batching: chunked prefill budget, seats, preemption, abort, determinism, bad input."""

from __future__ import annotations

import random

import pytest

from lodestar_vllm.sim.engine import EngineRequest
from lodestar_vllm.sim.virtual_driver import run_virtual
from lodestar_vllm.tokenizer import text_for_tokens
from tests.engine.conftest import make_engine, request, run_to_end


def plain(rid: str, prompt_len: int, max_tokens: int, at: float = 0.0) -> EngineRequest:
    return EngineRequest(rid, prompt_len, max_tokens, [], at)


def test_chunked_prefill_respects_the_token_budget() -> None:
    engine = make_engine(budget=64, max_seqs=8)
    engine.add_request(plain("a", 200, 3))
    sizes = []
    firsts = []
    now = 0.0
    while engine.has_unfinished():
        res = engine.step(now)
        now += res.duration
        sizes.append(res.scheduled_tokens)
        firsts.append(res.first_token)
    assert sizes == [64, 64, 64, 8, 1, 1]
    assert firsts == [[], [], [], ["a"], [], []]


def test_decodes_go_first_and_prefill_takes_the_rest_of_the_budget() -> None:
    engine = make_engine(budget=64, max_seqs=8)
    engine.add_request(plain("d", 10, 100))
    engine.step(0.0)
    engine.add_request(plain("p", 300, 2))
    res = engine.step(1.0)
    assert res.scheduled_tokens == 64
    assert res.emitted == ["d"]  # p's chunk of 63 tokens emits nothing yet
    res = engine.step(2.0)
    assert res.scheduled_tokens == 64 and res.emitted == ["d"]


def test_max_num_seqs_caps_running_and_the_rest_wait() -> None:
    engine = make_engine(max_seqs=2)
    for i in range(5):
        engine.add_request(plain(f"r{i}", 20, 10))
    engine.step(0.0)
    stats = engine.stats()
    assert (stats.num_running, stats.num_waiting) == (2, 3)
    result = run_virtual(make_engine(max_seqs=2), [(0.0, plain(f"r{i}", 20, 10)) for i in range(5)])
    assert all(t.output_tokens == 10 for t in result.timings.values())
    # FCFS: the later requests got their first token no earlier than the earlier ones
    firsts = [result.timings[f"r{i}"].first_token for i in range(5)]
    assert firsts == sorted(firsts)


def test_preemption_when_kv_runs_out_and_every_request_still_completes() -> None:
    # 10 blocks of 16 tokens: three requests of 40 + 60 tokens cannot all stay resident.
    engine = make_engine(num_gpu_blocks=10)
    arrivals = [(0.0, plain(f"r{i}", 40, 60)) for i in range(3)]
    result = run_virtual(engine, arrivals)
    stats = engine.stats()
    assert stats.num_preemptions_total > 0
    assert all(t.output_tokens == 60 and t.finished is not None for t in result.timings.values())
    assert stats.generation_tokens_total == 180
    assert stats.kv_cache_usage == 0.0 and not engine.has_unfinished()


def test_preempted_request_is_the_most_recently_admitted_one() -> None:
    engine = make_engine(num_gpu_blocks=6, max_seqs=4)
    engine.add_request(plain("old", 32, 100))  # 2 blocks
    engine.add_request(plain("new", 32, 100))  # 2 blocks
    now = 0.0
    while engine.stats().num_preemptions_total == 0:
        now += engine.step(now).duration
    assert [r.request_id for r in engine.scheduler.waiting] == ["new"]
    assert list(engine.scheduler.running) == ["old"]


def test_abort_frees_blocks_and_forgets_the_request() -> None:
    engine = make_engine()
    engine.add_request(plain("run", 100, 50))
    engine.step(0.0)
    engine.step(1.0)
    engine.add_request(plain("wait", 100, 50))
    assert engine.stats().kv_cache_usage > 0
    assert engine.abort_request("run")
    assert engine.abort_request("wait")
    assert not engine.abort_request("run")
    assert not engine.abort_request("never")
    stats = engine.stats()
    assert stats.kv_cache_usage == 0.0
    assert (stats.num_running, stats.num_waiting) == (0, 0)
    assert not engine.has_unfinished()
    assert engine.step(2.0).duration == 0.0


def _random_workload(seed: int, n: int = 60) -> list[tuple[float, EngineRequest]]:
    rng = random.Random(seed)
    shared = text_for_tokens(256, seed=99)
    out = []
    t = 0.0
    for i in range(n):
        t += rng.expovariate(20.0)
        tail = text_for_tokens(rng.randint(1, 400), seed=rng.randint(1, 10**6))
        text = (shared[: rng.randint(0, 256) * 4] if rng.random() < 0.6 else "") + tail
        out.append((t, request(f"q{i}", text, max_tokens=rng.randint(1, 80), at=t)))
    return out


def test_same_inputs_give_identical_timings() -> None:
    runs = []
    for _ in range(2):
        engine = make_engine(num_gpu_blocks=120, budget=256, max_seqs=16)
        result = run_virtual(engine, _random_workload(5))
        runs.append(([(t.first_token, t.finished, t.cached_tokens) for t in result.timings.values()],
                     engine.stats()))
    assert runs[0] == runs[1]
    assert runs[0][1].num_preemptions_total > 0  # the workload does exercise the slow path


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_request_gets_exactly_its_tokens_under_pressure(seed: int) -> None:
    engine = make_engine(num_gpu_blocks=80, budget=128, max_seqs=12)
    arrivals = _random_workload(seed)
    result = run_virtual(engine, arrivals)
    for _t, req in arrivals:
        timing = result.timings[req.request_id]
        assert timing.output_tokens == req.max_tokens
        assert timing.first_token is not None and timing.finished >= timing.first_token >= timing.arrival
    stats = engine.stats()
    assert stats.generation_tokens_total == sum(r.max_tokens for _t, r in arrivals)
    assert stats.prompt_tokens_total == sum(r.prompt_len for _t, r in arrivals)
    assert stats.kv_cache_usage == 0.0


def test_bad_requests_are_refused_and_change_nothing() -> None:
    engine = make_engine(max_model_len=512)
    engine.add_request(plain("a", 10, 5))
    before = engine.stats()
    with pytest.raises(ValueError, match="duplicate"):
        engine.add_request(plain("a", 10, 5))
    with pytest.raises(ValueError, match="max_model_len"):
        engine.add_request(plain("long", 512, 5))
    with pytest.raises(ValueError, match="prompt_len"):
        engine.add_request(plain("empty", 0, 5))
    with pytest.raises(ValueError, match="max_tokens"):
        engine.add_request(plain("none", 10, 0))
    with pytest.raises(ValueError, match="block hashes"):
        engine.add_request(EngineRequest("h", 20, 5, [1, 2], 0.0))
    assert engine.stats() == before
    assert run_to_end(engine) > 0


def test_generation_stops_at_max_model_len() -> None:
    engine = make_engine(max_model_len=64)
    result = run_virtual(engine, [(0.0, plain("a", 60, 100))])
    assert result.timings["a"].output_tokens == 4


def test_batch_size_config_must_be_valid() -> None:
    with pytest.raises(ValueError, match="max_num_seqs"):
        make_engine(budget=16, max_seqs=32)


@pytest.mark.parametrize("seed", range(6))
def test_fast_scheduler_matches_a_naive_vllm_scheduler_step_by_step(seed: int) -> None:
    from tests.engine.reference_scheduler import RefScheduler

    rng = random.Random(seed)
    blocks, budget, seats = rng.choice([(48, 64, 8), (90, 128, 12), (300, 512, 32), (50, 32, 4)])
    engine = make_engine(num_gpu_blocks=blocks, budget=budget, max_seqs=seats)
    ref = RefScheduler(blocks, 16, budget, seats, engine.config.max_model_len)
    arrivals = _random_workload(seed, n=50)
    now = 0.0
    i = 0
    for _step in range(20_000):
        while i < len(arrivals) and arrivals[i][0] <= now:
            req = arrivals[i][1]
            engine.add_request(req)
            ref.add(req.request_id, req.prompt_len, req.max_tokens, list(req.block_hashes))
            i += 1
        if not engine.has_unfinished():
            if i == len(arrivals):
                break
            now = arrivals[i][0]
            continue
        res = engine.step(now)
        tokens, emitted, first, finished = ref.step()
        assert (res.scheduled_tokens, res.emitted, res.first_token) == (tokens, emitted, first)
        assert sorted(rid for rid, _ in res.finished) == sorted(finished)
        assert engine.stats().num_preemptions_total == ref.preemptions
        assert engine.pool.num_free == ref.pool.num_free
        now += res.duration
    assert i == len(arrivals) and not engine.has_unfinished()
    assert engine.stats().prefix_cache_hits_total == ref.hits
