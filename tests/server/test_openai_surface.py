"""The emulator's OpenAI surface: shapes, chunk order, ids, usage, prefix hits, tokenizer endpoints."""

from __future__ import annotations

from lodestar_vllm import tokenizer
from lodestar_vllm.sim.server import render_chat
from tests.server.conftest import MODEL, Running, parse_sse


async def test_models_version_health(emulator: Running) -> None:
    c = emulator.client
    models = (await c.get("/v1/models")).json()
    assert models["object"] == "list"
    card = models["data"][0]
    assert card["id"] == MODEL and card["object"] == "model" and card["owned_by"] == "vllm"
    assert card["max_model_len"] == 2048
    assert (await c.get("/version")).json()["version"].count(".") == 2
    health = await c.get("/health")
    assert health.status_code == 200 and health.content == b""


async def test_completion_non_streaming_echoes_request_id(emulator: Running) -> None:
    r = await emulator.client.post(
        "/v1/completions",
        json={"model": MODEL, "prompt": "hello " * 40, "max_tokens": 5, "ignore_eos": True, "min_tokens": 5},
        headers={"X-Request-Id": "req-42"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "cmpl-req-42"
    assert body["object"] == "text_completion"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    # filler text: one 4-char word per token, so it re-tokenizes to the completion token count
    assert tokenizer.estimate_tokens(choice["text"]) == 5
    usage = body["usage"]
    assert usage["prompt_tokens"] == tokenizer.estimate_tokens("hello " * 40) == 60
    assert usage["completion_tokens"] == 5 and usage["total_tokens"] == 65
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}


async def test_chat_stream_chunk_order_and_usage(emulator: Running) -> None:
    r = await emulator.client.post(
        "/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi there"}],
            "max_tokens": 4,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        headers={"X-Request-Id": "abc"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(ch["id"] == "chatcmpl-abc" and ch["object"] == "chat.completion.chunk" for ch in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = chunks[1:-1]
    assert len(content) == 4
    assert [ch["choices"][0]["finish_reason"] for ch in content] == [None, None, None, "length"]
    assert all(set(ch["choices"][0]["delta"]) == {"content"} for ch in content)
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    prompt_tokens = tokenizer.estimate_tokens(render_chat([{"role": "user", "content": "hi there"}]))
    assert usage_chunk["usage"]["prompt_tokens"] == prompt_tokens
    assert usage_chunk["usage"]["completion_tokens"] == 4


async def test_completion_stream_without_usage(emulator: Running) -> None:
    r = await emulator.client.post(
        "/v1/completions", json={"prompt": [1, 2, 3, 4, 5], "max_tokens": 3, "stream": True}
    )
    events = parse_sse(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len(chunks) == 3 and all("usage" not in ch for ch in chunks)
    assert chunks[0]["id"].startswith("cmpl-")
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_repeated_and_partially_shared_prompts_hit_the_prefix_cache(emulator: Running) -> None:
    c = emulator.client
    shared = list(range(100, 100 + 300))  # 2 full 128-token blocks + 44

    async def cached(prompt: list[int]) -> int:
        r = await c.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 2})
        assert r.status_code == 200, r.text
        return r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]

    assert await cached(shared) == 0
    assert await cached(shared) == 256  # full blocks only
    assert await cached(shared[:200] + [7] * 200) == 128  # the first block is shared, the second differs


async def test_chat_with_equal_message_prefix_hits(emulator: Running) -> None:
    c = emulator.client
    system = {"role": "system", "content": "You are a routing assistant. " * 40}  # ~290 tokens

    async def cached(question: str) -> int:
        r = await c.post(
            "/v1/chat/completions",
            json={"messages": [system, {"role": "user", "content": question}], "max_tokens": 2},
        )
        assert r.status_code == 200, r.text
        return r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]

    assert await cached("first question") == 0
    assert await cached("a different second question") == 256


async def test_tokenize_is_prefix_stable_and_detokenize_answers(emulator: Running) -> None:
    c = emulator.client
    a = (await c.post("/tokenize", json={"prompt": "abcdefgh" * 10})).json()
    b = (await c.post("/tokenize", json={"prompt": "abcdefgh" * 10 + "tail"})).json()
    assert a["count"] == 20 and a["max_model_len"] == 2048
    assert b["tokens"][: a["count"]] == a["tokens"]
    chat = (await c.post("/tokenize", json={"messages": [{"role": "user", "content": "hi"}]})).json()
    assert chat["count"] == tokenizer.estimate_tokens(render_chat([{"role": "user", "content": "hi"}]))
    detok = (await c.post("/detokenize", json={"tokens": [1, 2, 3]})).json()
    assert tokenizer.estimate_tokens(detok["prompt"]) == 3


async def test_batched_completion_prompts(emulator: Running) -> None:
    c = emulator.client
    r = await c.post("/v1/completions", json={"prompt": ["a" * 40, "b" * 80], "max_tokens": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [ch["index"] for ch in body["choices"]] == [0, 1]
    assert all(ch["finish_reason"] == "length" for ch in body["choices"])
    assert body["usage"]["prompt_tokens"] == 10 + 20 and body["usage"]["completion_tokens"] == 6
    r = await c.post(
        "/v1/completions",
        json={"prompt": [[1, 2, 3], [4, 5, 6, 7]], "max_tokens": 2, "stream": True,
              "stream_options": {"include_usage": True}},
    )
    chunks = parse_sse(r.text)
    assert chunks[-1] == "[DONE]"
    finishes = {ch["choices"][0]["index"]: ch["choices"][0]["finish_reason"] for ch in chunks[:-2]
                if ch["choices"][0]["finish_reason"]}
    assert finishes == {0: "length", 1: "length"}
    assert chunks[-2]["usage"]["prompt_tokens"] == 7
