"""The vLLM V1 engine core, driver-agnostic: ``step(now)`` runs one scheduler iteration starting at ``now`` and
returns how long it takes and what it produced. A virtual-time driver and a real-time (asyncio) driver both
call ``step``; the engine itself never reads a clock.

Composition, one owner per concern as in vLLM: ``kv_cache.BlockPool`` (blocks, prefix cache, LRU eviction),
``scheduler.Scheduler`` (continuous batching, chunked prefill, preemption), ``step_time.StepTimeModel`` (how long
a step takes on this GPU for this model), ``profiles`` (the hardware and model facts).

Outputs of a step are effective at ``start + duration``: drivers deliver tokens then and call ``step`` again
no earlier. An idle engine (``has_unfinished()`` false) need not be stepped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lodestar_vllm.sim.cluster_spec import EngineConfig
from lodestar_vllm.sim.kv_cache import BlockPool, num_gpu_blocks
from lodestar_vllm.sim.profiles import EngineProfile
from lodestar_vllm.sim.scheduler import Scheduler
from lodestar_vllm.sim.step_time import StepTimeModel, prefill_pairs


@dataclass(slots=True)
class EngineRequest:
    request_id: str
    prompt_len: int
    max_tokens: int
    # Chained hashes of the FULL blocks of the prompt at the engine's block size (len == prompt_len // block_size).
    # May go on over the reply the request will generate (prompt + output text, at most
    # (prompt_len + max_tokens) // block_size): its full output blocks are then prefix-cached as computed.
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
    def __init__(self, profile: EngineProfile, config: EngineConfig) -> None:
        self.profile = profile
        self.config = config
        self.num_gpu_blocks = num_gpu_blocks(profile, config)
        self.block_size = config.block_size
        self.pool = BlockPool(self.num_gpu_blocks)
        self.scheduler = Scheduler(
            self.pool,
            config.block_size,
            config.max_num_batched_tokens,
            config.max_num_seqs,
            config.max_model_len,
            config.enable_prefix_caching,
        )
        self.step_time = StepTimeModel(profile.step)
        self._busy_until = 0.0

    @property
    def max_model_len(self) -> int:
        """The effective limit: the configured one, capped by what the KV cache can hold for one request."""
        return self.scheduler.max_model_len

    def add_request(self, request: EngineRequest) -> None:
        """Queue a request (ValueError for a bad one: duplicate id, empty or too long prompt, bad hashes)."""
        self.scheduler.add(
            request.request_id, request.prompt_len, request.max_tokens, request.block_hashes, request.arrival_time
        )

    def abort_request(self, request_id: str) -> bool:
        """Drop a waiting or running request and free its blocks; False when it is unknown or finished."""
        return self.scheduler.abort(request_id)

    def has_unfinished(self) -> bool:
        return bool(self.scheduler.requests)

    def step(self, now: float) -> StepResult:
        out = self.scheduler.schedule()
        if out.tokens == 0:
            return StepResult(now, 0.0)
        duration = self.step_time.duration(out.tokens, out.seqs, out.pairs, out.decode_context)
        self._busy_until = now + duration
        return StepResult(now, duration, out.tokens, out.emitted, out.first_token, out.finished)

    def stats(self) -> EngineStats:
        s = self.scheduler
        return EngineStats(
            num_running=len(s.running),
            num_waiting=len(s.waiting),
            kv_cache_usage=self.pool.usage(),
            num_preemptions_total=s.num_preemptions,
            prefix_cache_queries_total=s.prefix_queries,
            prefix_cache_hits_total=s.prefix_hits,
            prompt_tokens_total=s.prompt_tokens,
            generation_tokens_total=s.generation_tokens,
            num_gpu_blocks=self.num_gpu_blocks,
            block_size=self.block_size,
        )

    def estimate_ttft(self, prompt_len: int, block_hashes: Sequence[int], now: float) -> float:
        """What-if: seconds until the first token of such a request added now, from the engine's true queues
        (used by the oracle router only; cheap, no mutation).

        The backlog ahead of it (waiting prompts, the rest of the current prefill) plus its own uncached
        tokens are chunked through the token budget left over by the current decoders, at the current batch's
        step time; the step in flight finishes first. When the seats (``max_num_seqs``) are all taken, it also
        waits for one to free up behind the waiting requests (finish steps and output lengths are known). Not modelled: KV blocks
        running out, and prefix hits of the requests ahead."""
        s = self.scheduler
        bs = self.block_size
        hit = 0
        if s.prefix_caching and block_hashes and prompt_len > 1:
            hit = len(self.pool.match_prefix(block_hashes, (prompt_len - 1) // bs)) * bs
        own = max(1, prompt_len - hit)
        total = s.prefill_backlog() + own
        n_dec = s.num_decoding
        per_step = max(1, s.budget - n_dec)
        full_steps = (total - 1) // per_step
        last = total - full_steps * per_step
        ctx = s.decode_context()
        model = self.step_time
        # Its own attention pairs are all charged to the last step (same total, cheaper to compute).
        t = model.duration(n_dec + last, n_dec + 1, prefill_pairs(hit, own), ctx)
        if full_steps:
            t += full_steps * model.duration(n_dec + per_step, n_dec, 0, ctx)
        if len(s.running) + len(s.waiting) >= s.max_seqs:
            wait = s.steps_until_seat()
            if wait:
                own_steps = -(-own // per_step)
                seat_t = (wait + own_steps - 1) * model.duration(n_dec, n_dec, 0, ctx) + model.duration(
                    n_dec + min(own, per_step), n_dec + 1, prefill_pairs(hit, own), ctx)
                t = max(t, seat_t)
        if self._busy_until > now:
            t += self._busy_until - now
        return t

    def cached_tokens(self, request_id: str) -> int:
        """Prefix-cache hit tokens of the request when it was first scheduled (0 before)."""
        return self.scheduler.cached_tokens(request_id)
