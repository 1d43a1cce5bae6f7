"""Drill fixtures: emulated engines (with fault injection) and the stand-in router, on 127.0.0.1 free ports.

Every server runs in its own thread with its own event loop (as separate processes would), starts within a
bounded wait and is stopped on exit. Each test gets a fresh adapter runtime.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from lodestar_vllm.integrations.production_stack import runtime as runtime_mod
from lodestar_vllm.integrations.production_stack.loopback import ThreadedServer
from lodestar_vllm.integrations.production_stack.settings import LodestarSettings
from lodestar_vllm.sim.profiles import default_engine_config, get_profile
from lodestar_vllm.sim.server import EngineServer, build_server, create_app
from tests.drills.faults import FaultInjector
from tests.drills.standin import Endpoint, StandInState, build_standin

MODEL = "tiny"
# The emulated CPU engine runs this many times faster than wall time: drills take seconds, not minutes.
TIME_SCALE = 10.0
# Learned options that reach the model path within a drill's few hundred requests.
FAST_LEARNED: dict[str, Any] = {"first_fit_samples": 40, "refit_every_samples": 80, "train_steps": 60,
                                "ensemble": 2, "hidden": [16, 16]}


@dataclass
class Engine:
    url: str
    served: EngineServer
    faults: FaultInjector
    server: ThreadedServer


@dataclass
class Router:
    url: str
    state: StandInState
    runtime: runtime_mod.LodestarRuntime

    def status(self) -> dict[str, Any]:
        return httpx.get(self.url + "/lodestar/status", timeout=10).json()

    def metrics_text(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=10).text


@contextlib.contextmanager
def engine(time_scale: float = TIME_SCALE, **config: Any) -> Iterator[Engine]:
    served = build_server(get_profile("cpu", "tiny"), default_engine_config("cpu", **config),
                          served_model_name=MODEL, time_scale=time_scale)
    faults = FaultInjector(create_app(served))
    server = ThreadedServer(faults)  # type: ignore[arg-type] - any ASGI app serves
    server._server.config.timeout_graceful_shutdown = 3  # noqa: SLF001 - bound shutdown with open streams
    with server:
        try:
            yield Engine(server.url, served, faults, server)
        finally:
            faults.release_hangs()


@contextlib.contextmanager
def engines(n: int, **kwargs: Any) -> Iterator[list[Engine]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(engine(**kwargs)) for _ in range(n)]


@contextlib.contextmanager
def router(urls: Sequence[str], policy: str = "learned", options: Mapping[str, Any] | None = None,
           failover_attempts: int = 1, **settings: Any) -> Iterator[Router]:
    """The stand-in host with the real adapter; the runtime is built as the launcher builds it."""
    base: dict[str, Any] = {"scrape_interval": 0.2, "scrape_timeout": 0.5}
    base.update(settings)
    lodestar = LodestarSettings(policy=policy, policy_options=dict(options or {}), **base)
    rt = runtime_mod.install_runtime(runtime_mod.LodestarRuntime(lodestar, engine_urls=lambda: list(urls)))
    app, state = build_standin([Endpoint(u, [MODEL]) for u in urls], failover_attempts)
    server = ThreadedServer(app)
    server._server.config.timeout_graceful_shutdown = 3  # noqa: SLF001
    with server:
        yield Router(server.url, state, rt)


def completion(prompt: str, max_tokens: int = 4, stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "stream": stream, **extra}


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def settled(r: Router) -> bool:
    counts = r.runtime.tracker.counts()
    return counts["pending"] == 0 and counts["in_flight"] == 0


@pytest.fixture(autouse=True)
def _fresh_runtime() -> Iterator[None]:
    runtime_mod.clear_runtime()
    yield
    runtime_mod.clear_runtime()
