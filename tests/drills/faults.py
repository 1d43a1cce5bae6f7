"""Faults injected into an emulated engine's HTTP surface (pure ASGI middleware), switchable while it serves."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from lodestar_vllm.sim.realtime import RealtimeEngine

GARBAGE_METRICS = b"<html>502 Bad Gateway</html>\nvllm:num_requests_running{{{ not a number\n\x00\xff"
# A hung /metrics is held at most this long (a bound for shutdown), far beyond any scrape timeout we set.
HANG_BOUND_S = 20.0


@dataclass
class FaultState:
    errors_500: bool = False  # /v1/*: answer 500 with vLLM's error shape
    metrics: str = "ok"  # ok | hang | garbage
    served: dict[str, int] = field(default_factory=lambda: {"ok": 0, "500": 0})
    release: asyncio.Event | None = None


class FaultInjector:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = FaultState()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        path = scope.get("path", "")
        if path == "/metrics" and self.state.metrics == "hang":
            if self.state.release is None:
                self.state.release = asyncio.Event()
            try:
                await asyncio.wait_for(self.state.release.wait(), HANG_BOUND_S)
            except TimeoutError:
                pass
            return await _respond(send, 504, b"hung", "text/plain")
        if path == "/metrics" and self.state.metrics == "garbage":
            return await _respond(send, 200, GARBAGE_METRICS, "text/plain; version=0.0.4")
        if path.startswith("/v1/") and scope.get("method") == "POST":
            if self.state.errors_500:
                self.state.served["500"] += 1
                body = {"error": {"message": "injected engine failure", "type": "InternalServerError",
                                  "param": None, "code": 500}}
                return await _respond(send, 500, json.dumps(body).encode(), "application/json")
            self.state.served["ok"] += 1
        return await self.app(scope, receive, send)

    def release_hangs(self) -> None:
        if self.loop is not None and self.state.release is not None:
            self.loop.call_soon_threadsafe(self.state.release.set)


def slow_down(engine: RealtimeEngine, loop: asyncio.AbstractEventLoop, factor: float) -> None:
    """Make the emulated hardware ``factor`` times slower from now on, keeping its clock continuous."""

    def apply() -> None:
        now = engine.now()
        engine.time_scale /= factor
        engine._t0 = loop.time() - now / engine.time_scale  # noqa: SLF001 - test-only clock surgery

    loop.call_soon_threadsafe(apply)


async def _respond(send: Any, status: int, body: bytes, content_type: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
