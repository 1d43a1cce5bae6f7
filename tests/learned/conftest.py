"""A toy fleet for the learned router's tests: deterministic, tiny, independent of the simulator.

Each engine prefills one request at a time at a fixed token rate (a FIFO queue), caches whole prompt groups
(LRU of group ids, so a shared prefix is free the second time), and reports EngineMetrics on every call.
Good enough to give the learner a real signal (speed differs per engine, load and cache matter).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field

import pytest

from lodestar_vllm.core.types import (
    EngineMetrics,
    HardwareInfo,
    InstanceView,
    Outcome,
    OutcomeStatus,
    RequestInfo,
)
from lodestar_vllm.tokenizer import text_for_tokens


@dataclass
class ToyEngine:
    url: str
    tokens_per_s: float
    gpu: str | None = None
    cache_groups: int = 4
    busy_until: float = 0.0
    inflight: int = 0
    cache: OrderedDict[int, None] = field(default_factory=OrderedDict)

    def view(self, now: float, kv: float | None = None) -> InstanceView:
        usage = len(self.cache) / self.cache_groups if kv is None else kv
        metrics = EngineMetrics(scraped_at=now, num_running=min(self.inflight, 4), num_waiting=max(self.inflight - 4, 0),
                                kv_cache_usage=usage, num_gpu_blocks=4096, block_size=16)
        return InstanceView(self.url, metrics, HardwareInfo(gpu_class=self.gpu) if self.gpu else None)


class ToyFleet:
    def __init__(self, rates: list[float], gpus: list[str | None] | None = None, shared_tokens: int = 1024,
                 unique_tokens: int = 256, groups: int = 6, interval: float = 0.05) -> None:
        gpus = gpus or [None] * len(rates)
        self.engines = [ToyEngine(f"http://e{i}:8000", r, g) for i, (r, g) in enumerate(zip(rates, gpus, strict=True))]
        self.shared_tokens = shared_tokens
        self.unique_tokens = unique_tokens
        self.groups = groups
        self.interval = interval
        self.now = 0.0
        self.count = 0
        self._prefix = {g: text_for_tokens(shared_tokens, seed=1000 + g) for g in range(groups)}

    def request(self, group: int | None = None, tokens_scale: float = 1.0) -> tuple[RequestInfo, int]:
        self.count += 1
        g = self.count % self.groups if group is None else group
        unique = text_for_tokens(int(self.unique_tokens * tokens_scale), seed=self.count)
        text = self._prefix[g] + unique
        req = RequestInfo(request_id=f"r{self.count}", model="toy", prompt_text=text, arrival_time=self.now,
                          max_tokens=16)
        return req, g

    def views(self, kv: float | None = None) -> list[InstanceView]:
        return [e.view(self.now, kv) for e in self.engines]

    def serve(self, req: RequestInfo, group: int, url: str) -> Outcome:
        """Dispatch to ``url`` now; the outcome is computed at once (FIFO prefill, fixed decode)."""
        eng = next(e for e in self.engines if e.url == url)
        total = len(req.prompt_text) // 4
        cached = self.shared_tokens if group in eng.cache else 0
        eng.cache[group] = None
        eng.cache.move_to_end(group)
        while len(eng.cache) > eng.cache_groups:
            eng.cache.popitem(last=False)
        start = max(self.now, eng.busy_until)
        first = start + 0.005 + (total - cached) / eng.tokens_per_s
        eng.busy_until = first
        eng.inflight += 1
        return Outcome(req.request_id, url, self.now, OutcomeStatus.OK, first_token_at=first,
                       finished_at=first + 15 * 0.02, prompt_tokens=total, completion_tokens=16, cached_tokens=cached)

    def finish(self, url: str) -> None:
        next(e for e in self.engines if e.url == url).inflight -= 1

    def tick(self) -> None:
        self.now += self.interval


def drive(policy, fleet: ToyFleet, n: int, kv: float | None = None) -> list[tuple[str, str, float]]:
    """Route ``n`` requests one interval apart, delivering each outcome when its first token is due (so the
    router sees requests in flight); returns (url, path, ttft) per request."""
    out = []
    pending: list[tuple[float, int, Outcome]] = []
    for i in range(n + 1):
        while pending and (pending[0][0] <= fleet.now or i == n):
            _, _, outcome = heapq.heappop(pending)
            fleet.finish(outcome.url)
            policy.on_first_token(outcome.request_id, outcome.url, outcome.first_token_at)
            policy.on_outcome(outcome)
        if i == n:
            break
        req, group = fleet.request()
        decision = policy.route(req, fleet.views(kv), fleet.now)
        outcome = fleet.serve(req, group, decision.url)
        heapq.heappush(pending, (outcome.first_token_at, i, outcome))
        out.append((decision.url, str(decision.path), outcome.ttft))
        fleet.tick()
    return out


@pytest.fixture
def fleet() -> ToyFleet:
    return ToyFleet([20000.0, 20000.0, 5000.0, 5000.0], gpus=["H100", "H100", "L4", "L4"])


# Small, fast training for tests.
FAST = dict(first_fit_samples=60, refit_every_samples=60, train_steps=60, batch_size=64, ensemble=2,
            hidden=(16, 16), explore_initial=0.05)
