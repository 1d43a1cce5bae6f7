"""A host-free stand-in for production-stack's request path, driving the REAL lodestar adapter.

It does what ``vllm_router.services.request_service.request.route_general_request`` does at the pinned commit,
reduced to what the drills exercise: 400 for a body that is not a JSON object or names no model; the routing
logic called the way the unpatched host calls a router it does not know (synchronously, four arguments, the body
read from the request's cache); failover to the remaining engines when an attempt fails before its first byte
(``max_instance_failover_reroute_attempts``); the response streamed through. Attempts go through
``process_request`` wrapped by ``compat.install_lifecycle_hook`` (the adapter's own outcome hook), the adapter's
status routes are mounted, and ``/metrics`` serves prometheus_client's default registry, as the host's does.
Decision latency is measured around each ``route_request`` call (bounded ring).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lodestar_vllm.integrations.production_stack import compat
from lodestar_vllm.integrations.production_stack.routing import LearnedRouter
from lodestar_vllm.integrations.production_stack.runtime import current_runtime
from lodestar_vllm.integrations.production_stack.status import mount_status

# Headers the host drops from the engine's response before re-sending it.
_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "content-encoding", "content-type"}


@dataclass
class Endpoint:
    """The fields of the host's EndpointInfo that the adapter reads."""

    url: str
    model_names: list[str]
    healthy: bool = True
    model_label: str | None = None


@dataclass
class StandInState:
    endpoints: list[Endpoint]
    failover_attempts: int = 1
    decision_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))
    routing_errors: int = 0  # exceptions that escaped route_request (must stay 0)
    router: LearnedRouter | None = None


def build_standin(endpoints: Sequence[Endpoint], failover_attempts: int = 1) -> tuple[FastAPI, StandInState]:
    state = StandInState(list(endpoints), failover_attempts)
    client = httpx.AsyncClient(timeout=httpx.Timeout(60.0),
                               limits=httpx.Limits(max_connections=2000, max_keepalive_connections=200))

    async def process_request(request: Any, body: bytes, backend_url: str, request_id: str,
                              endpoint: str) -> AsyncIterator[Any]:
        # Same shape as the host's: first item (headers, status), then raw body chunks.
        headers = {"content-type": "application/json", "x-request-id": request_id}
        async with client.stream("POST", backend_url + endpoint, content=body, headers=headers) as response:
            yield response.headers, response.status_code
            async for chunk in response.aiter_raw():
                yield chunk

    host_request = SimpleNamespace(process_request=process_request)
    compat.install_lifecycle_hook(SimpleNamespace(request=host_request))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # As the adapter's app hook does on the real host: background work lives in the router's lifespan.
        runtime = current_runtime()
        if runtime is not None:
            await runtime.start()
        try:
            yield
        finally:
            if runtime is not None:
                await runtime.stop()
            await client.aclose()

    app = FastAPI(lifespan=lifespan)
    mount_status(app)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def route_general(request: Request, endpoint: str) -> Response:
        request_id = request.headers.get("x-request-id") or str(uuid.uuid4())
        body = await request.body()  # starlette caches it on request._body, where the adapter reads it
        try:
            request_json = json.loads(body) if body else {}
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return JSONResponse({"error": "Invalid request: body must be valid JSON."}, 400)
        if not isinstance(request_json, dict):
            return JSONResponse({"error": "Invalid request: body must be a JSON object."}, 400)
        model = request_json.get("model")
        if model is None:
            return JSONResponse({"error": "Invalid request: missing 'model' in request body."}, 400)
        candidates = [e for e in state.endpoints if model in e.model_names]
        if not candidates:
            return JSONResponse({"error": f"Model '{model}' not found."}, 404)
        if state.router is None:
            state.router = LearnedRouter(max_instance_failover_reroute_attempts=state.failover_attempts)
        router = state.router
        failed: set[str] = set()
        last_error: Exception | None = None
        for _ in range(router.max_instance_failover_reroute_attempts + 1):
            remaining = [e for e in candidates if e.url not in failed]
            if not remaining:
                break
            started = time.perf_counter()
            try:
                url = router.route_request(remaining, {}, {}, request)
            except Exception:
                state.routing_errors += 1
                raise
            finally:
                state.decision_seconds.append(time.perf_counter() - started)
            stream = host_request.process_request(request, body, str(url), request_id, endpoint)
            try:
                headers, status = await anext(stream)
            except Exception as exc:  # connection refused, reset before the first byte: try another engine
                failed.add(str(url))
                last_error = exc
                continue
            out_headers = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
            out_headers["X-Request-Id"] = request_id
            return StreamingResponse(stream, status_code=status, headers=out_headers,
                                     media_type=headers.get("content-type", "text/event-stream"))
        # The host re-raises the last error here, which its app turns into a 500.
        return JSONResponse({"error": f"all engines failed: {last_error!r}"}, 500,
                            headers={"X-Request-Id": request_id})

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await route_general(request, "/v1/completions")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await route_general(request, "/v1/chat/completions")

    return app, state
