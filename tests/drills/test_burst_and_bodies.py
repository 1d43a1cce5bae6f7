"""Drills at the request edge: a burst of 1,000 concurrent streams, and malformed request bodies."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.requests import Request

from lodestar_vllm.integrations.production_stack.routing import LearnedRouter
from tests.drills.conftest import FAST_LEARNED, MODEL, completion, engines, router, settled, wait_for
from tests.drills.standin import Endpoint

BURST = int(os.environ.get("LODESTAR_DRILL_BURST", "1000"))


@pytest.mark.slow
async def test_burst_of_concurrent_streams() -> None:
    """Must hold: 1,000 streaming requests opened at once all complete with 200 and [DONE] (the stand-in host
    and the emulated engines produce no errors of their own at this size, so any error would be ours), every
    attempt gets exactly one outcome, nothing stays in flight. Reported: decision latency p50/p99 (in-process
    time of route_request) and the share per engine."""
    with engines(3, time_scale=50.0) as es, router([e.url for e in es], options=FAST_LEARNED) as r:
        with httpx.Client(base_url=r.url, timeout=30) as warm:  # the model path, not only the cold start
            for i in range(60):
                assert warm.post("/v1/completions", json=completion(f"warm {i} " * 20)).status_code == 200
        wait_for(lambda: r.runtime.policy.model is not None, 30, "a first model")
        r.state.decision_seconds.clear()
        limits = httpx.Limits(max_connections=BURST + 10, max_keepalive_connections=BURST + 10)
        async with httpx.AsyncClient(base_url=r.url, timeout=120, limits=limits) as client:
            errors: list[str] = []

            async def one(i: int) -> tuple[int, bool]:
                body = completion(f"burst {i % 40} shared prefix " * 8 + f"tail {i}", max_tokens=4)
                async with client.stream("POST", "/v1/completions", json=body) as response:
                    text = (await response.aread()).decode()
                    if response.status_code != 200:
                        errors.append(text[:300])
                    return response.status_code, text.rstrip().endswith("data: [DONE]")

            results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(BURST))), 240)
        wait_for(lambda: settled(r), 20, "every burst attempt to finish")
        status = r.status()
        decisions = np.array(r.state.decision_seconds)
        failed_errors = [str(a["outcome"]["error"]) for a in list(r.runtime._explain.values())  # noqa: SLF001
                         if a.get("outcome", {}).get("status") == "failed"]
    codes = [code for code, _ in results]
    assert codes.count(200) == BURST, ({c: codes.count(c) for c in set(codes)}, errors[:3])
    assert all(done for _, done in results)
    outcomes = status["attempts"]["outcomes"]
    # Each request ended in exactly one successful attempt; an attempt that failed to connect (an engine's accept
    # queue under 1,000 simultaneous connects: the host's failover covers it the same way) is accounted too.
    assert outcomes["ok"] == BURST + 60 and sum(outcomes.values()) == status["routed"], status["attempts"]
    assert all("Connect" in e or "Read" in e for e in failed_errors), failed_errors
    assert r.state.routing_errors == 0 and status["fallbacks"] == 0
    assert not any(status["policy_status"]["ledger"]["per_engine"].values())
    p50, p99 = np.percentile(decisions, [50, 99]) * 1e3
    print(f"\nburst drill: {BURST} concurrent streams, all ok ({len(failed_errors)} failed-over attempts: "
          f"{sorted(set(e.split(':')[0] for e in failed_errors))}); decision latency p50 {p50:.2f} ms, "
          f"p99 {p99:.2f} ms, max {decisions.max() * 1e3:.2f} ms (n={decisions.size}); "
          f"paths {status['policy_status']['paths']}")


MALFORMED: list[Any] = [
    {"model": MODEL},  # no prompt at all
    {"model": MODEL, "prompt": None, "max_tokens": None},
    {"model": MODEL, "prompt": {"nested": ["x", {"y": 1}]}},
    {"model": MODEL, "prompt": [1, "two", None, 3.5]},
    {"model": MODEL, "prompt": [[1, 2], [3]], "max_tokens": -5},
    {"model": MODEL, "prompt": "x" * 200_000, "max_tokens": 10**12},
    {"model": MODEL, "prompt": "ok", "max_tokens": "ten"},
    {"model": MODEL, "prompt": "ok", "max_tokens": float("nan")},
    {"model": MODEL, "prompt": "ok", "max_tokens": [4]},
    {"model": MODEL, "prompt": "\udcff\x00\u202e"},
    {"model": MODEL, "messages": "not a list"},
    {"model": MODEL, "messages": [None, 3, {"role": None, "content": {"a": 1}}]},
    {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}, "str"]}]},
    {"model": MODEL, "prompt": "ok", "user": {"id": [1]}},
    {"model": [MODEL], "prompt": "ok"},
    {"model": MODEL, "prompt": "a" * 10, "stream": "yes", "stream_options": 7},
]
RAW_BODIES: list[bytes] = [b"", b"{", b"null", b"[]", b'"str"', b"\xff\xfe\x00", b"{" * 5000 + b"}" * 5000,
                           b'{"model": "tiny", "prompt": "x"' + b" " * 10]


def _request(body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    request = Request({"type": "http", "method": "POST", "path": "/v1/completions", "headers": headers or []})
    request._body = body  # noqa: SLF001 - what starlette caches once the host has read the body
    return request


def test_malformed_bodies_never_escape_the_routing_logic() -> None:
    """Must hold: for any body (valid JSON of the wrong shape, invalid JSON, binary, huge, deeply nested, odd
    headers), in both host call styles (4-argument sync, 5-argument with the parsed body), route_request returns
    one of the candidate URLs and raises nothing."""
    from lodestar_vllm.integrations.production_stack import runtime as runtime_mod
    from lodestar_vllm.integrations.production_stack.settings import LodestarSettings

    runtime_mod.install_runtime(runtime_mod.LodestarRuntime(LodestarSettings(policy_options=FAST_LEARNED)))
    endpoints = [Endpoint("http://127.0.0.1:1", [MODEL]), Endpoint("http://127.0.0.1:2", [MODEL])]
    urls = {e.url for e in endpoints}
    learned = LearnedRouter()
    odd_headers = [(b"x-request-id", b"\xff" * 300), (b"x-session-id", b"")]
    for body in MALFORMED:
        raw = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
        assert learned.route_request(endpoints, {}, {}, _request(raw)) in urls, body
        assert learned.route_request(endpoints, {}, {}, _request(raw, odd_headers), body) in urls, body
    for raw in RAW_BODIES:
        assert learned.route_request(endpoints, {}, {}, _request(raw)) in urls, raw[:40]
    assert learned.route_request(endpoints, None, None, object(), None) in urls  # not even a request object
    assert learned.route_request(endpoints, {}, {}, _request(b"{}"), ["not", "a", "dict"]) in urls  # type: ignore[arg-type]


@pytest.mark.slow
def test_malformed_bodies_over_http() -> None:
    """Must hold: through the stand-in host, each malformed body gets the host's 400 or the engine's own answer
    (200 or its vLLM-shaped 4xx), never a 5xx; routing errors stay at 0 and every routed attempt is accounted."""
    with engines(2) as es, router([e.url for e in es], options=FAST_LEARNED) as r:
        with httpx.Client(base_url=r.url, timeout=30) as client:
            codes = []
            for body in MALFORMED:
                raw = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
                codes.append(client.post("/v1/completions", content=raw).status_code)
                codes.append(client.post("/v1/chat/completions", content=raw).status_code)
            for raw in RAW_BODIES:
                codes.append(client.post("/v1/completions", content=raw).status_code)
            ok = client.post("/v1/completions", json=completion("still fine"))
        wait_for(lambda: settled(r), 10, "outcomes")
        status = r.status()
    assert all(c < 500 for c in codes), codes
    assert ok.status_code == 200
    assert r.state.routing_errors == 0 and status["attempts"]["policy_hook_errors"] == 0
    assert sum(status["attempts"]["outcomes"].values()) == status["routed"]
    print(f"\nmalformed drill: status codes {sorted(set(codes))}, routed {status['routed']}, "
          f"fallbacks {status['fallbacks']}")
