"""What the adapter adds to one request inside the router: ``route_request`` (body parse, views, policy, attempt
registration) plus the attempt's lifecycle (claim, first token, usage, outcome), in-process, no network.

    python -m lodestar_vllm.integrations.production_stack.overhead --requests 2000 --policies roundrobin,learned

Prompts come from the prefix-sharing workload (so the learned policy's prefix index does real work); engines are
4 candidates with scraped metrics. Prints per-request microseconds (median, P90, P99) per policy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from lodestar_vllm.core.types import EngineMetrics
from lodestar_vllm.integrations.production_stack import runtime as runtime_mod
from lodestar_vllm.integrations.production_stack.routing import LearnedRouter
from lodestar_vllm.integrations.production_stack.runtime import LodestarRuntime, install_runtime
from lodestar_vllm.integrations.production_stack.settings import LodestarSettings
from lodestar_vllm.workloads import load_workload

URLS = [f"http://10.0.0.{i}:8000" for i in range(1, 5)]


@dataclass
class _Endpoint:
    url: str
    healthy: bool = True


class _Request:
    """What the adapter reads of a Starlette request: headers and the cached body."""

    def __init__(self, body: bytes, request_id: str) -> None:
        self._body = body
        self.headers = {"content-type": "application/json", "x-request-id": request_id}


async def _stream(usage: bytes) -> AsyncIterator[Any]:
    yield {"content-type": "text/event-stream"}, 200
    yield b'data: {"choices": [{"text": "a"}]}\n\n'
    yield usage


async def measure(policy: str, n: int, seed: int) -> np.ndarray:
    runtime_mod.clear_runtime()
    runtime = install_runtime(LodestarRuntime(LodestarSettings(policy=policy, seed=seed)))
    # Scraped metrics as the background scraper would leave them (no network here).
    runtime.scraper._latest = {u: EngineMetrics(scraped_at=0.0, num_running=i, kv_cache_usage=0.1 * i)
                               for i, u in enumerate(URLS)}
    router = LearnedRouter()
    endpoints = [_Endpoint(u) for u in URLS]
    requests = load_workload("prefix-sharing", seed=seed, max_requests=n)
    bodies = [json.dumps({"model": "m", "prompt": r.prompt_text(), "max_tokens": 16, "stream": True}).encode()
              for r in requests]
    usage = b'data: {"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 1}}\n\n'
    costs = np.empty(len(bodies))
    for i, body in enumerate(bodies):
        rid = f"r{i}"
        start = time.perf_counter()
        url = router.route_request(endpoints, {}, {}, _Request(body, rid))
        attempt = runtime.tracker.claim(url, rid)
        async for _ in runtime.tracker.observe(attempt, _stream(usage)):
            pass
        costs[i] = time.perf_counter() - start
    runtime_mod.clear_runtime()
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--policies", default="roundrobin,least-request,learned")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 100_000:
        parser.error("--requests must be in [1, 100000]")
    print(f"{'policy':<16}{'n':>7}{'median us':>11}{'P90 us':>9}{'P99 us':>9}")
    for policy in [p.strip() for p in args.policies.split(",") if p.strip()]:
        costs = asyncio.run(measure(policy, args.requests, args.seed)) * 1e6
        print(f"{policy:<16}{len(costs):>7}{np.median(costs):>11.0f}{np.percentile(costs, 90):>9.0f}"
              f"{np.percentile(costs, 99):>9.0f}", flush=True)
    print("(per request: route_request + claim + a 3-item response stream + outcome; 4 candidates)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
