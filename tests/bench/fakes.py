"""Small deterministic stand-ins for the simulator tests: an engine with a transparent timing rule, workload
requests, and policies that record what they were shown."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from lodestar_vllm.core.types import Decision, HardwareInfo, InstanceView, Outcome, RequestInfo
from lodestar_vllm.policies.base import RoutingPolicy
from lodestar_vllm.sim.cluster_spec import ClusterSpec, InstanceSpec
from lodestar_vllm.sim.engine import EngineRequest, EngineStats, StepResult
from lodestar_vllm.tokenizer import text_for_tokens


@dataclass(slots=True)
class _Req:
    req: EngineRequest
    prefilled: int = 0
    generated: int = 0
    cached: int = 0


class FakeEngine:
    """FCFS, chunked prefill with a token budget; step time = 10 ms + 0.1 ms per scheduled token. Prefix cache:
    every block hash ever prefilled stays cached (no eviction)."""

    OVERHEAD_S = 0.010
    PER_TOKEN_S = 0.0001

    def __init__(self, block_size: int = 16, budget: int = 512) -> None:
        self.block_size = block_size
        self.budget = budget
        self.waiting: list[_Req] = []
        self.running: list[_Req] = []
        self.cache: set[int] = set()
        self.by_id: dict[str, _Req] = {}
        self.steps = 0
        self.queries = 0
        self.hits = 0
        self.generated_total = 0
        self.prompt_total = 0

    def _cached(self, prompt_len: int, hashes: Sequence[int]) -> int:
        n = 0
        for h in hashes:
            if h not in self.cache:
                break
            n += 1
        return min(n * self.block_size, prompt_len - 1)

    def add_request(self, request: EngineRequest) -> None:
        r = _Req(request)
        self.waiting.append(r)
        self.by_id[request.request_id] = r

    def abort_request(self, request_id: str) -> bool:
        r = self.by_id.pop(request_id, None)
        if r is None:
            return False
        for queue in (self.waiting, self.running):
            if r in queue:
                queue.remove(r)
        return True

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def step(self, now: float) -> StepResult:
        self.steps += 1
        budget = self.budget
        out = StepResult(start=now, duration=0.0)
        for r in list(self.running):
            budget -= 1
            r.generated += 1
            out.emitted.append(r.req.request_id)
            if r.generated >= r.req.max_tokens:
                self.running.remove(r)
                out.finished.append((r.req.request_id, "length"))
        while self.waiting and budget > 0:
            r = self.waiting[0]
            if r.prefilled == 0:
                r.cached = self._cached(r.req.prompt_len, r.req.block_hashes)
                r.prefilled = r.cached
                self.queries += r.req.prompt_len
                self.hits += r.cached
                self.prompt_total += r.req.prompt_len
            chunk = min(budget, r.req.prompt_len - r.prefilled)
            budget -= chunk
            r.prefilled += chunk
            if r.prefilled < r.req.prompt_len:
                break
            self.waiting.pop(0)
            self.cache.update(r.req.block_hashes)
            r.generated = 1
            out.emitted.append(r.req.request_id)
            out.first_token.append(r.req.request_id)
            if r.generated >= r.req.max_tokens:
                out.finished.append((r.req.request_id, "length"))
            else:
                self.running.append(r)
        out.scheduled_tokens = self.budget - budget
        self.generated_total += len(out.emitted)
        out.duration = self.OVERHEAD_S + self.PER_TOKEN_S * out.scheduled_tokens
        return out

    def stats(self) -> EngineStats:
        return EngineStats(
            num_running=len(self.running), num_waiting=len(self.waiting), kv_cache_usage=0.0,
            num_preemptions_total=0, prefix_cache_queries_total=self.queries, prefix_cache_hits_total=self.hits,
            prompt_tokens_total=self.prompt_total, generation_tokens_total=self.generated_total,
            num_gpu_blocks=1000, block_size=self.block_size,
        )

    def estimate_ttft(self, prompt_len: int, block_hashes: Sequence[int], now: float) -> float:
        queued = sum(r.req.prompt_len - r.prefilled for r in self.waiting)
        own = prompt_len - self._cached(prompt_len, block_hashes)
        tokens = queued + own
        steps = tokens // self.budget + 1
        return steps * self.OVERHEAD_S + tokens * self.PER_TOKEN_S

    def cached_tokens(self, request_id: str) -> int:
        r = self.by_id.get(request_id)
        return r.cached if r is not None else 0


def fake_factory(spec: InstanceSpec) -> tuple[FakeEngine, HardwareInfo]:
    return FakeEngine(spec.engine.block_size), HardwareInfo(gpu_class=spec.gpu, gpu_count=1, tensor_parallel=1)


def two_gpu_cluster(count: int = 2) -> ClusterSpec:
    return ClusterSpec.from_mapping({"model": "m", "instances": [{"gpu": "A100-40GB", "count": count}]})


@dataclass(frozen=True, slots=True)
class FakeRequest:
    request_id: str
    arrival_time: float
    prompt_tokens: int
    output_tokens: int
    session_id: str | None = None
    shared_tokens: int = 0  # a common prefix of this many tokens (same for every request)

    def prompt_text(self) -> str:
        shared = text_for_tokens(self.shared_tokens, 7)
        own = text_for_tokens(self.prompt_tokens - self.shared_tokens, hash(self.request_id) & 0xFFFF or 1)
        return shared + own


def make_requests(n: int, gap_s: float = 0.05, prompt: int = 300, output: int = 20,
                  shared: int = 0) -> list[FakeRequest]:
    return [FakeRequest(f"r{i}", i * gap_s, prompt, output, f"s{i % 3}", shared) for i in range(n)]


class RoundRobin(RoutingPolicy):
    name = "test-roundrobin"

    def __init__(self, seed: int = 0) -> None:
        self.i = 0

    def route(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Decision:
        self.i += 1
        return Decision(candidates[(self.i - 1) % len(candidates)].url)


@dataclass
class Recording(RoutingPolicy):
    """Random choice (seeded) that records everything it is shown and told."""

    seed: int = 0
    seen: list[tuple[float, RequestInfo, tuple[InstanceView, ...]]] = field(default_factory=list)
    first_tokens: list[tuple[str, str, float]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def route(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Decision:
        self.seen.append((now, request, tuple(candidates)))
        return Decision(self.rng.choice(list(candidates)).url)

    def on_first_token(self, request_id: str, url: str, now: float) -> None:
        self.first_tokens.append((request_id, url, now))

    def on_outcome(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
