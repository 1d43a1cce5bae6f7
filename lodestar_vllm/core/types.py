"""The learner's own small vocabulary: what a request looks like, what a candidate engine looks like, what
came back. Plain dataclasses so that the simulator and every host adapter can build them cheaply.

Times are seconds on one clock chosen by the caller (virtual time in the simulator, ``time.monotonic()`` in
production); the learner never reads a clock itself, which keeps it deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a router can know about a request before choosing an engine."""

    request_id: str
    model: str
    # The text the engine will tokenize (completion prompt, or chat messages rendered in order). Routers see
    # text, never token ids: prefix matching on the router side works on this string.
    prompt_text: str
    arrival_time: float
    # Estimated prompt tokens; when None, consumers estimate from the text (lodestar_vllm.tokenizer).
    prompt_tokens: int | None = None
    max_tokens: int | None = None
    session_id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HardwareInfo:
    """Hardware facts about an engine when known (Kubernetes labels, cluster file); all optional."""

    gpu_class: str | None = None  # normalised, e.g. "A100-80GB", "H100-80GB", "L4"
    gpu_memory_gb: float | None = None
    gpu_count: int | None = None
    tensor_parallel: int | None = None


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    """One scrape of an engine's ``/metrics``. Counters are cumulative as exported; ``scraped_at`` lets
    consumers judge staleness."""

    scraped_at: float
    num_running: float = 0.0
    num_waiting: float = 0.0
    kv_cache_usage: float = 0.0  # 0..1
    num_preemptions_total: float = 0.0
    prefix_cache_queries_total: float = 0.0
    prefix_cache_hits_total: float = 0.0
    prompt_tokens_total: float = 0.0
    generation_tokens_total: float = 0.0
    num_gpu_blocks: int | None = None  # from vllm:cache_config_info
    block_size: int | None = None


@dataclass(frozen=True, slots=True)
class InstanceView:
    """A candidate engine as the router sees it. ``url`` is the stable key; it is never a model feature."""

    url: str
    metrics: EngineMetrics | None = None
    hardware: HardwareInfo | None = None
    healthy: bool = True


class DecisionPath(StrEnum):
    """Why an engine was chosen; carried into logs, metrics and explanations."""

    MODEL = "model"
    EXPLORATION = "exploration"
    GUARD = "guard"
    FALLBACK = "fallback"
    HEURISTIC = "heuristic"  # a baseline policy's own rule


@dataclass(frozen=True, slots=True)
class Decision:
    url: str
    path: DecisionPath = DecisionPath.HEURISTIC
    # Predicted TTFT (seconds) at the chosen engine, when the policy predicts.
    predicted_ttft: float | None = None
    reason: str = ""


class OutcomeStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"  # engine error, connection error, HTTP >= 500
    ABORTED = "aborted"  # the client went away


@dataclass(frozen=True, slots=True)
class Outcome:
    """The measured result of one routed attempt."""

    request_id: str
    url: str
    dispatched_at: float
    status: OutcomeStatus
    first_token_at: float | None = None
    finished_at: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    http_status: int | None = None
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        if self.first_token_at is None:
            return None
        return self.first_token_at - self.dispatched_at

    @property
    def e2e(self) -> float | None:
        if self.finished_at is None:
            return None
        return self.finished_at - self.dispatched_at
