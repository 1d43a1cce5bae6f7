"""CONTRACT STUB — to be replaced by the engine-model implementation (keep these names and signatures).

The vLLM V1 engine core, driver-agnostic: ``step(now)`` runs one scheduler iteration starting at ``now`` and
returns how long it takes and what it produced. A virtual-time driver and a real-time (asyncio) driver both
call ``step``; the engine itself never reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lodestar_vllm.sim.cluster_spec import EngineConfig


@dataclass(slots=True)
class EngineRequest:
    request_id: str
    prompt_len: int
    max_tokens: int
    # Chained hashes of the FULL blocks of the prompt at the engine's block size (len == prompt_len // block_size)
    block_hashes: Sequence[int]
    arrival_time: float


@dataclass(slots=True)
class StepResult:
    start: float
    duration: float
    scheduled_tokens: int = 0
    # Request ids that produced one output token in this step (the first one included), in schedule order.
    emitted: list[str] = field(default_factory=list)
    # Subset of ``emitted`` whose token is their first output token.
    first_token: list[str] = field(default_factory=list)
    # (request_id, finish_reason) for requests finished by this step: "length" or "stop".
    finished: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class EngineStats:
    num_running: int
    num_waiting: int
    kv_cache_usage: float
    num_preemptions_total: int
    prefix_cache_queries_total: int
    prefix_cache_hits_total: int
    prompt_tokens_total: int
    generation_tokens_total: int
    num_gpu_blocks: int
    block_size: int


class EngineCore:
    def __init__(self, profile: object, config: EngineConfig) -> None:
        raise NotImplementedError

    def add_request(self, request: EngineRequest) -> None:
        raise NotImplementedError

    def abort_request(self, request_id: str) -> bool:
        raise NotImplementedError

    def has_unfinished(self) -> bool:
        raise NotImplementedError

    def step(self, now: float) -> StepResult:
        raise NotImplementedError

    def stats(self) -> EngineStats:
        raise NotImplementedError

    def estimate_ttft(self, prompt_len: int, block_hashes: Sequence[int], now: float) -> float:
        """What-if: seconds until the first token of such a request added now, from the engine's true queues
        (used by the oracle router only; cheap, no mutation)."""
        raise NotImplementedError

    def cached_tokens(self, request_id: str) -> int:
        """Prefix-cache hit tokens of the request when it was first scheduled (0 before)."""
        raise NotImplementedError
