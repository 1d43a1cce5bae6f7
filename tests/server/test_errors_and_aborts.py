"""Bad input gets vLLM's status and error shape and breaks nothing; a client disconnect frees the request."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.server.conftest import MODEL, Running, metric_value, run_emulator

BAD_COMPLETIONS = [
    # (raw body, status, error type, param)
    ("{bad json", 400, "Bad Request", "body.1"),
    ("{}", 400, "BadRequestError", "prompt"),
    ('{"model": "nope", "prompt": "hi"}', 404, "NotFoundError", "model"),
    ('{"model": "tiny", "prompt": "hi", "max_tokens": -1}', 400, "BadRequestError", "max_tokens"),
    ('{"model": "tiny", "prompt": "hi", "max_tokens": 0}', 400, "BadRequestError", "max_tokens"),
    ('{"model": "tiny", "prompt": "hi", "max_tokens": "a"}', 400, "Bad Request", "body.max_tokens"),
    ('{"model": "tiny", "prompt": "hi", "max_tokens": 3000}', 400, "BadRequestError", "max_tokens"),
    ('{"model": "tiny", "prompt": [' + ",".join(["5"] * 2100) + "]}", 400, "BadRequestError", "input_tokens"),
    ("[1, 2]", 400, "Bad Request", "body"),
]


@pytest.mark.parametrize(("raw", "status", "err_type", "param"), BAD_COMPLETIONS)
async def test_bad_completion_requests(emulator: Running, raw: str, status: int, err_type: str, param: str) -> None:
    r = await emulator.client.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (err_type, param, status)
    assert error["message"]


async def test_bad_chat_requests_and_server_survives(emulator: Running) -> None:
    c = emulator.client
    r = await c.post("/v1/chat/completions", json={"model": MODEL})
    assert r.status_code == 400 and r.json()["error"]["param"] == "body.messages"
    r = await c.post("/v1/chat/completions", json={"model": "x", "messages": [{"role": "user", "content": "a"}]})
    assert r.status_code == 404 and "does not exist" in r.json()["error"]["message"]
    r = await c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "a"}], "max_tokens": -3})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("max_tokens must be at least 1")
    assert (await c.get("/health")).status_code == 200
    ok = await c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "a"}], "max_tokens": 1})
    assert ok.status_code == 200


async def test_max_tokens_clamped_to_context_left() -> None:
    async with run_emulator(time_scale=50.0, max_model_len=512) as emu:
        r = await emu.client.post("/v1/completions", json={"prompt": list(range(500)), "max_tokens": 100})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 12  # 512 - 500, as vLLM clamps


async def _wait_idle(emu: Running, rounds: int = 200) -> None:
    for _ in range(rounds):  # bounded: up to ~4 s
        stats = emu.server.engine.core.stats()
        if stats.num_running == 0 and stats.num_waiting == 0:
            return
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
async def test_stream_disconnect_aborts_and_frees_blocks(path: str) -> None:
    async with run_emulator(time_scale=1.0) as emu:
        body: dict[str, object] = {"max_tokens": 1500, "stream": True}
        if path.endswith("chat/completions"):
            body["messages"] = [{"role": "user", "content": "x" * 600}]
        else:
            body["prompt"] = list(range(600))
        async with httpx.AsyncClient(base_url=emu.url, timeout=10) as other:
            async with other.stream("POST", path, json=body) as response:
                lines = 0
                async for line in response.aiter_lines():
                    lines += line.startswith("data: ")
                    if lines >= 3:
                        break
                during = emu.server.engine.core.stats()
                assert during.num_running == 1 and during.kv_cache_usage > 0
        # the client is gone: the engine must drop the request and release its KV blocks
        await _wait_idle(emu)
        after = emu.server.engine.core.stats()
        assert after.num_running == 0 and after.kv_cache_usage == 0.0
        assert emu.server.engine.num_streams == 0
        exposition = (await emu.client.get("/metrics")).text
        assert metric_value(exposition, "vllm:request_success_total", finished_reason="abort") == 1.0
        assert metric_value(exposition, "vllm:num_requests_running") == 0
        assert metric_value(exposition, "vllm:kv_cache_usage_perc") == 0


async def test_non_streaming_disconnect_aborts() -> None:
    async with run_emulator(time_scale=1.0) as emu:
        async with httpx.AsyncClient(base_url=emu.url, timeout=10) as other:
            task = asyncio.create_task(
                other.post("/v1/completions", json={"prompt": list(range(300)), "max_tokens": 1500})
            )
            for _ in range(200):
                if emu.server.engine.core.stats().num_running == 1:
                    break
                await asyncio.sleep(0.01)
            assert emu.server.engine.core.stats().num_running == 1
            task.cancel()  # closes the connection mid-request
            with pytest.raises(asyncio.CancelledError):
                await task
        await _wait_idle(emu)
        assert emu.server.engine.core.stats().num_running == 0
        assert emu.server.engine.core.stats().kv_cache_usage == 0.0


async def test_dead_engine_reports_503_and_fails_requests() -> None:
    async with run_emulator() as emu:
        core = emu.server.engine.core

        def broken(now: float) -> object:
            raise RuntimeError("simulated engine fault")

        core.step = broken  # type: ignore[method-assign]
        r = await emu.client.post("/v1/completions", json={"prompt": "hello", "max_tokens": 3})
        assert r.status_code == 500 and "engine is dead" in r.json()["error"]["message"]
        assert (await emu.client.get("/health")).status_code == 503
        r = await emu.client.post("/v1/completions", json={"prompt": "hello", "max_tokens": 3})
        assert r.status_code == 503
