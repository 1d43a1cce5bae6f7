"""/metrics carries vLLM's names, types, labels and buckets; the real-time driver steps only when there is work."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from lodestar_vllm.sim.engine import EngineCore
from lodestar_vllm.sim.profiles import default_engine_config, get_profile
from lodestar_vllm.sim.realtime import IngestCost, RealtimeEngine
from lodestar_vllm.sim.vllm_metrics import TIME_TO_FIRST_TOKEN_BUCKETS, request_tokens_buckets
from tests.server.conftest import MODEL, Running, metric_value, run_emulator

EXPECTED_TYPES = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:prefix_cache_queries": "counter",
    "vllm:prefix_cache_hits": "counter",
    "vllm:num_preemptions": "counter",
    "vllm:prompt_tokens": "counter",
    "vllm:generation_tokens": "counter",
    "vllm:request_success": "counter",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram",
    "vllm:request_prefill_time_seconds": "histogram",
    "vllm:request_decode_time_seconds": "histogram",
    "vllm:cache_config_info": "gauge",
}


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


async def test_exposition_names_types_labels(emulator: Running) -> None:
    text = (await emulator.client.get("/metrics")).text
    fams = families(text)
    for name, kind in EXPECTED_TYPES.items():
        assert name in fams, name
        assert fams[name].type == kind, name  # type: ignore[attr-defined]
    sample = fams["vllm:num_requests_running"].samples[0]  # type: ignore[attr-defined]
    assert sample.labels == {"model_name": MODEL, "engine": "0"}
    info = fams["vllm:cache_config_info"].samples[0].labels  # type: ignore[attr-defined]
    stats = emulator.server.engine.stats()
    assert info["num_gpu_blocks"] == str(stats.num_gpu_blocks) and info["block_size"] == "128"
    reasons = {
        s.labels["finished_reason"]
        for s in fams["vllm:request_success"].samples  # type: ignore[attr-defined]
        if s.name.endswith("_total")
    }
    assert reasons == {"stop", "length", "abort", "error", "repetition"}
    ttft_bounds = [
        float(s.labels["le"])
        for s in fams["vllm:time_to_first_token_seconds"].samples  # type: ignore[attr-defined]
        if s.name.endswith("_bucket")
    ]
    assert ttft_bounds == [*TIME_TO_FIRST_TOKEN_BUCKETS, float("inf")]


async def test_counters_and_histograms_follow_requests(emulator: Running) -> None:
    c = emulator.client
    prompt = list(range(1000, 1300))
    for _ in range(2):
        r = await c.post("/v1/completions", json={"prompt": prompt, "max_tokens": 6})
        assert r.status_code == 200
    text = (await c.get("/metrics")).text
    assert metric_value(text, "vllm:prefix_cache_queries_total") == 600
    assert metric_value(text, "vllm:prefix_cache_hits_total") == 256
    assert metric_value(text, "vllm:prompt_tokens_total") == 600
    assert metric_value(text, "vllm:generation_tokens_total") == 12
    assert metric_value(text, "vllm:request_success_total", finished_reason="length") == 2
    assert metric_value(text, "vllm:time_to_first_token_seconds_count") == 2
    assert metric_value(text, "vllm:inter_token_latency_seconds_count") == 10
    assert metric_value(text, "vllm:e2e_request_latency_seconds_count") == 2
    assert metric_value(text, "vllm:request_prompt_tokens_count") == 2
    assert metric_value(text, "vllm:num_requests_running") == 0
    assert metric_value(text, "vllm:time_to_first_token_seconds_sum") > 0


async def test_engines_in_one_process_have_separate_registries() -> None:
    async with run_emulator() as a, run_emulator() as b:
        await a.client.post("/v1/completions", json={"prompt": "x" * 400, "max_tokens": 2})
        text_a = (await a.client.get("/metrics")).text
        text_b = (await b.client.get("/metrics")).text
        assert metric_value(text_a, "vllm:prompt_tokens_total") == 100
        assert metric_value(text_b, "vllm:prompt_tokens_total") == 0


def test_request_token_buckets_are_vllm_1_2_5_series() -> None:
    assert request_tokens_buckets(2048) == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]


async def test_driver_is_idle_without_work_and_events_follow_engine_clock() -> None:
    core = EngineCore(get_profile("cpu", "tiny"), default_engine_config("cpu"))
    steps: list[float] = []
    real_step = core.step

    def counting_step(now: float):  # type: ignore[no-untyped-def]
        result = real_step(now)
        steps.append(result.duration)
        return result

    core.step = counting_step  # type: ignore[method-assign]
    engine = RealtimeEngine(core, time_scale=50.0)
    await engine.start()
    try:
        await asyncio.sleep(0.05)
        assert steps == []  # nothing to do: no step taken
        stream = engine.submit("r1", 300, 4, [])
        events = [e async for e in stream]
        assert [e.index for e in events] == [0, 1, 2, 3]
        assert events[-1].finish_reason == "length"
        # token i is released when the step that produced it ends: times are cumulative step durations
        assert events[0].time - stream.request.arrival_time >= steps[0] - 1e-9
        assert all(b.time > a.time for a, b in zip(events, events[1:], strict=False))
        taken = len(steps)
        await asyncio.sleep(0.05)
        assert len(steps) == taken  # idle again: no busy loop
    finally:
        await engine.stop()


async def test_ingest_delays_scheduling_and_a_shared_core_blocks_the_engine() -> None:
    core = EngineCore(get_profile("cpu", "tiny"), default_engine_config("cpu"))
    engine = RealtimeEngine(core, time_scale=50.0, ingest=IngestCost(fixed_s=0.5, shares_engine=True))
    await engine.start()
    try:
        first = engine.submit("a", 100, 2, [])
        second = engine.submit("b", 100, 2, [])
        assert core.stats().num_waiting == 0  # still being ingested: the scheduler has not seen them
        a = [e async for e in first]
        b = [e async for e in second]
        # one core: "b" is ingested after "a" (0.5 s each, engine clock) and no step runs meanwhile
        assert a[0].time - first.request.arrival_time >= 0.5
        assert b[0].time - second.request.arrival_time >= 1.0
    finally:
        await engine.stop()


async def test_abort_while_ingesting_never_reaches_the_engine() -> None:
    core = EngineCore(get_profile("cpu", "tiny"), default_engine_config("cpu"))
    engine = RealtimeEngine(core, time_scale=10.0, ingest=IngestCost(fixed_s=1.0))
    await engine.start()
    try:
        stream = engine.submit("x", 100, 5, [])
        engine.abort("x")
        assert [e.finish_reason async for e in stream] == ["abort"]
        await asyncio.sleep(0.15)  # past the ingest time (1.0 engine s = 0.1 s wall)
        assert core.stats().num_waiting == 0 and core.stats().num_running == 0
        assert core.stats().prefix_cache_queries_total == 0
    finally:
        await engine.stop()


async def test_published_stats_change_only_at_step_ends() -> None:
    """As vLLM: a request that arrives while a step runs is not counted as waiting until the next step."""
    core = EngineCore(get_profile("cpu", "tiny"), default_engine_config("cpu"))
    engine = RealtimeEngine(core, time_scale=1.0)
    await engine.start()
    try:
        first = engine.submit("long", 1900, 3, [])  # a ~50 ms prefill step
        for _ in range(100):
            if core.stats().num_running == 1:
                break
            await asyncio.sleep(0.001)
        late = engine.submit("late", 100, 2, [])
        assert core.stats().num_waiting == 1  # the engine holds it ...
        assert engine.stats().num_waiting == 0  # ... but the published snapshot predates it
        for stream in (first, late):
            async for _event in stream:
                pass
        assert engine.stats().prefix_cache_queries_total == 2000  # both scheduled, published after the steps
    finally:
        await engine.stop()
