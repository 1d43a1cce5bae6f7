"""Emulated engine servers on 127.0.0.1 free ports, in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from lodestar_vllm.sim.profiles import default_engine_config, get_profile
from lodestar_vllm.sim.serve import SharedLoopServer
from lodestar_vllm.sim.server import EngineServer, build_server, create_app

MODEL = "tiny"


@dataclass
class Running:
    url: str
    server: EngineServer
    client: httpx.AsyncClient


@contextlib.asynccontextmanager
async def run_emulator(time_scale: float = 20.0, **engine: object) -> AsyncIterator[Running]:
    """One cpu/tiny engine served by uvicorn on a free loopback port (bounded start-up wait)."""
    config = default_engine_config("cpu", **engine)
    served = build_server(get_profile("cpu", "tiny"), config, served_model_name=MODEL, time_scale=time_scale)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = SharedLoopServer(uvicorn.Config(create_app(served), log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    assert server.started, "emulator did not start"
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=20.0) as client:
            yield Running(url, served, client)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@pytest.fixture
async def emulator() -> AsyncIterator[Running]:
    async with run_emulator() as running:
        yield running


def parse_sse(text: str) -> list[dict | str]:
    import json

    out: list[dict | str] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (KeyError when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise KeyError(f"{name} {labels} not in exposition")
