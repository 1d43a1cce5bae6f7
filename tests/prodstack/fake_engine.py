"""A tiny FastAPI stand-in for a vLLM engine: OpenAI completions (streamed or not) and vLLM's /metrics text."""

from __future__ import annotations

import asyncio
import json

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

METRICS_CURRENT = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1000.0
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 400.0
# TYPE vllm:num_preemptions counter
vllm:num_preemptions_total{engine="0",model_name="m"} 7.0
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 5000.0
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{engine="0",model_name="m"} 900.0
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",engine="0",num_gpu_blocks="2048"} 1.0
"""

METRICS_OLD = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 0.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.5
# TYPE vllm:gpu_prefix_cache_queries counter
vllm:gpu_prefix_cache_queries_total{model_name="m"} 10.0
# TYPE vllm:gpu_prefix_cache_hits counter
vllm:gpu_prefix_cache_hits_total{model_name="m"} 5.0
"""


def make_engine(name: str, delay: float = 0.0, metrics_text: str = METRICS_CURRENT, chunks: int = 3) -> FastAPI:
    app = FastAPI()

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(metrics_text)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, object]:
        return {"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "fake"}]}

    @app.post("/v1/completions")
    async def completions(request: Request):  # noqa: ANN202 - FastAPI response union
        body = await request.json()
        usage = {"prompt_tokens": len(str(body.get("prompt", ""))) // 4, "completion_tokens": chunks}
        if body.get("fail"):
            return JSONResponse({"error": "engine failure"}, status_code=500)
        if not body.get("stream"):
            await asyncio.sleep(delay)
            return {"id": "x", "object": "text_completion", "engine": name,
                    "choices": [{"text": "ok " * chunks}], "usage": usage}

        async def stream():  # noqa: ANN202
            await asyncio.sleep(delay)
            for i in range(chunks):
                yield f"data: {json.dumps({'choices': [{'text': str(i)}], 'engine': name})}\n\n"
                await asyncio.sleep(float(body.get("gap", 0.0)))
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    return app
