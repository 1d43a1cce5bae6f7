"""vLLM V1's scheduler: continuous batching with chunked prefill, prefix caching and recompute preemption.

One step: running requests first in admission order (one decode token each, or the next prefill chunk), then
waiting requests first-come-first-served while the token budget, the ``max_num_seqs`` seats and the KV blocks
last. When blocks run out for a running request, the most recently admitted running request is preempted: its
blocks are freed and it goes back to the front of the waiting queue to recompute from scratch; no waiting
request is admitted in such a step (as vLLM).

Speed: decoding requests are kept as a group in virtual "decode clock" time instead of being touched every
step. All of them advance one token per step, so a decoder's progress is ``tokens at entry + (clock - entry
clock)``; it needs a new KV block when that crosses a block boundary (bucketed by phase modulo block size) and
finishes at a clock value known at entry. A step therefore costs O(requests that cross a block boundary,
finish or prefill) plus copying the running ids, not O(running) Python work. Because ``max_num_batched_tokens
>= max_num_seqs``, every decoder always fits the token budget, and at most one request (the last admitted) is
ever part-way through its prefill, at the tail of the running list; the slow path (walking the running list
in order) is taken only in steps where KV blocks run short.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Sequence
from itertools import islice

from lodestar_vllm.sim.kv_cache import BlockPool
from lodestar_vllm.sim.step_time import prefill_pairs

# How many finished requests' prefix-hit counts stay queryable (``cached_tokens`` after the end).
RECENT_FINISHED = 4096


class Request:
    __slots__ = (
        "request_id", "prompt_len", "max_output", "block_hashes", "arrival_time",
        "num_output", "computed", "blocks", "num_hashed", "cached_tokens", "scheduled_once", "running",
        "decoding", "g0", "c0", "o0", "phase", "finish_clock", "hashes_beyond_prompt",
    )

    def __init__(self, request_id: str, prompt_len: int, max_output: int, block_hashes: Sequence[int],
                 arrival_time: float) -> None:
        self.request_id = request_id
        self.prompt_len = prompt_len
        self.max_output = max_output
        self.block_hashes = block_hashes
        self.arrival_time = arrival_time
        self.num_output = 0
        self.computed = 0  # tokens whose KV is in the cache (materialised; stale while decoding)
        self.blocks: list[int] = []
        self.num_hashed = 0  # prompt blocks registered in the prefix cache
        self.cached_tokens = 0  # prefix-hit tokens at first schedule
        self.scheduled_once = False
        self.running = False
        self.decoding = False
        # Decode-group bookkeeping (valid while ``decoding``): entry clock, computed and outputs at entry.
        self.g0 = 0
        self.c0 = 0
        self.o0 = 0
        self.phase = 0
        self.finish_clock = 0
        # Set by the scheduler when the caller hashed the reply too (prompt + output text): its full blocks
        # are then cached as they are computed, as vLLM caches generated blocks, for a follow-up turn to hit.
        self.hashes_beyond_prompt = False

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.num_output


class SchedulerOutput:
    __slots__ = ("tokens", "seqs", "pairs", "decode_context", "emitted", "first_token", "finished")

    def __init__(self) -> None:
        self.tokens = 0
        self.seqs = 0  # sequences sampled (one logits row each)
        self.pairs = 0
        self.decode_context = 0
        self.emitted: list[str] = []
        self.first_token: list[str] = []
        self.finished: list[tuple[str, str]] = []


class Scheduler:
    def __init__(self, pool: BlockPool, block_size: int, max_num_batched_tokens: int, max_num_seqs: int,
                 max_model_len: int, enable_prefix_caching: bool = True) -> None:
        if max_num_seqs < 1 or max_num_batched_tokens < max_num_seqs:
            raise ValueError(
                f"need 1 <= max_num_seqs <= max_num_batched_tokens, got max_num_seqs={max_num_seqs}, "
                f"max_num_batched_tokens={max_num_batched_tokens} (vLLM refuses this too)"
            )
        self.pool = pool
        self.bs = block_size
        self.budget = max_num_batched_tokens
        self.max_seqs = max_num_seqs
        # A request must fit the KV cache on its own, as vLLM checks max_model_len against capacity.
        self.max_model_len = min(max_model_len, pool.num_blocks * block_size)
        self.prefix_caching = enable_prefix_caching
        self.requests: dict[str, Request] = {}
        self.waiting: deque[Request] = deque()
        self.waiting_tokens = 0  # sum of num_tokens over waiting requests (nothing computed there)
        # Running requests by id in admission order: O(1) removal of finished ones, the tail is popitem().
        self.running: dict[str, Request] = {}
        self.prefiller: Request | None = None  # the running request part-way through its prefill (tail)
        self.finishing: list[Request] = []  # done at their first token; released at the end of the step
        self.clock = 0  # decode clock: number of steps taken
        self.buckets: list[dict[Request, None]] = [{} for _ in range(block_size)]
        self.finish_at: dict[int, list[Request]] = {}
        self.num_decoding = 0
        self.decode_base = 0  # sum over decoders of (c0 - g0 + 1): context = decode_base + n * clock
        self.recent_cached: OrderedDict[str, int] = OrderedDict()
        self.num_preemptions = 0
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0

    # ---- requests in and out -------------------------------------------------------------------------
    def add(self, request_id: str, prompt_len: int, max_tokens: int, block_hashes: Sequence[int],
            arrival_time: float) -> None:
        if request_id in self.requests:
            raise ValueError(f"duplicate request id {request_id!r}")
        if prompt_len < 1:
            raise ValueError(f"prompt_len must be >= 1, got {prompt_len}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if prompt_len >= self.max_model_len:
            raise ValueError(f"prompt of {prompt_len} tokens does not fit max_model_len {self.max_model_len}")
        if len(block_hashes) > (prompt_len + max_tokens) // self.bs:
            raise ValueError(
                f"{len(block_hashes)} block hashes for a {prompt_len}-token prompt and {max_tokens} output tokens:"
                f" at most {(prompt_len + max_tokens) // self.bs} full blocks of {self.bs}"
            )
        max_output = min(max_tokens, self.max_model_len - prompt_len)
        r = Request(request_id, prompt_len, max_output, block_hashes, arrival_time)
        r.hashes_beyond_prompt = len(block_hashes) > prompt_len // self.bs
        self.requests[request_id] = r
        self.waiting.append(r)
        self.waiting_tokens += prompt_len

    def abort(self, request_id: str) -> bool:
        r = self.requests.pop(request_id, None)
        if r is None:
            return False
        if not r.running:
            self.waiting.remove(r)
            self.waiting_tokens -= r.num_tokens
        else:
            if r.decoding:
                self._leave_decode(r, self.clock)
                if r.hashes_beyond_prompt:
                    self._cache_output_blocks(r, r.computed)
            if r is self.prefiller:
                self.prefiller = None
            del self.running[request_id]
            self.pool.free(r.blocks)
            r.blocks = []
            r.running = False
        self._remember(r)
        return True

    def cached_tokens(self, request_id: str) -> int:
        r = self.requests.get(request_id)
        if r is not None:
            return r.cached_tokens
        return self.recent_cached.get(request_id, 0)

    def _remember(self, r: Request) -> None:
        recent = self.recent_cached
        recent[r.request_id] = r.cached_tokens
        if len(recent) > RECENT_FINISHED:
            recent.popitem(last=False)

    # ---- decode group ----------------------------------------------------------------------------------
    def _enter_decode(self, r: Request, clock: int) -> None:
        """``r`` has one uncomputed token (the one just sampled) and decodes from step ``clock`` on."""
        r.decoding = True
        r.g0 = clock
        r.c0 = r.computed
        r.o0 = r.num_output
        phase = (r.c0 - clock) % self.bs
        r.phase = phase
        self.buckets[phase][r] = None
        fin = clock + r.max_output - r.num_output - 1
        r.finish_clock = fin
        lst = self.finish_at.get(fin)
        if lst is None:
            self.finish_at[fin] = [r]
        else:
            lst.append(r)
        self.num_decoding += 1
        self.decode_base += r.c0 - clock + 1

    def _leave_decode(self, r: Request, clock: int, finishing: bool = False) -> None:
        """Materialise ``r``'s progress as of decode clock ``clock`` and take it out of the group."""
        d = clock - r.g0
        r.computed = r.c0 + d
        r.num_output = r.o0 + d
        del self.buckets[r.phase][r]
        if not finishing:
            self.finish_at[r.finish_clock].remove(r)
        self.num_decoding -= 1
        self.decode_base -= r.c0 - r.g0 + 1
        r.decoding = False

    # ---- helpers -----------------------------------------------------------------------------------------
    def _blocks_needed(self, r: Request, chunk: int) -> int:
        return -(-(r.computed + chunk) // self.bs) - len(r.blocks)

    def _advance_prefill(self, r: Request, chunk: int, out: SchedulerOutput) -> None:
        """Account a scheduled prefill chunk and register the prompt blocks it completes."""
        start = r.computed
        r.computed = start + chunk
        out.tokens += chunk
        out.pairs += prefill_pairs(start, chunk)
        if self.prefix_caching:
            full = min(len(r.block_hashes), r.computed // self.bs)
            if full > r.num_hashed:
                self.pool.cache_blocks(r.blocks, r.block_hashes, r.num_hashed, full)
                r.num_hashed = full

    def _cache_output_blocks(self, r: Request, computed: int) -> None:
        """Register the reply blocks that ``computed`` tokens have filled (only when the caller hashed them)."""
        full = min(len(r.block_hashes), computed // self.bs)
        if full > r.num_hashed:
            self.pool.cache_blocks(r.blocks, r.block_hashes, r.num_hashed, full)
            r.num_hashed = full

    def _sample_after_prefill(self, r: Request, out: SchedulerOutput) -> None:
        """``r`` computed all its tokens in this step: it emits one and decodes on (or finishes)."""
        r.num_output += 1
        out.seqs += 1
        out.emitted.append(r.request_id)
        if r.num_output == 1:
            out.first_token.append(r.request_id)
            self.prompt_tokens += r.prompt_len
        if r.num_output >= r.max_output:
            self.finishing.append(r)  # its blocks and seat stay taken until the step is over, as in vLLM
        else:
            self._enter_decode(r, self.clock + 1)

    def _finish(self, r: Request, out: SchedulerOutput) -> None:
        out.finished.append((r.request_id, "length"))
        del self.running[r.request_id]
        self.pool.free(r.blocks)
        r.blocks = []
        r.running = False
        del self.requests[r.request_id]
        self._remember(r)

    def _preempt(self, r: Request) -> None:
        if r.decoding:
            self._leave_decode(r, self.clock)
            if r.hashes_beyond_prompt:
                self._cache_output_blocks(r, r.computed)
        if r is self.prefiller:
            self.prefiller = None
        tail_id, _tail = self.running.popitem()  # preemption always takes the tail
        assert tail_id == r.request_id
        self.pool.free(r.blocks)
        r.blocks = []
        r.computed = 0
        r.num_hashed = 0
        r.running = False
        self.waiting.appendleft(r)
        self.waiting_tokens += r.num_tokens
        self.num_preemptions += 1

    # ---- one step ------------------------------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        """Run the scheduling of one step and apply its effects (tokens computed and sampled)."""
        out = SchedulerOutput()
        pool = self.pool
        clock = self.clock
        crossing = self.buckets[(-clock) % self.bs]
        pf = self.prefiller
        pf_chunk = 0
        need = len(crossing)
        if pf is not None:
            pf_chunk = min(pf.num_tokens - pf.computed, self.budget - self.num_decoding)
            need += self._blocks_needed(pf, pf_chunk)
        preempted = False
        if need <= pool.num_free:
            if crossing:
                pool.allocate_each([r.blocks for r in crossing])
                for r in crossing:
                    if r.hashes_beyond_prompt:
                        self._cache_output_blocks(r, r.c0 + clock - r.g0)
            if pf is not None:
                pool.allocate(self._blocks_needed(pf, pf_chunk), pf.blocks)
        else:
            preempted, pf_chunk = self._schedule_running_short_of_blocks(crossing)
            pf = self.prefiller if pf_chunk else None

        n_dec = self.num_decoding
        if n_dec:
            out.emitted = list(islice(self.running, n_dec))
            out.tokens = n_dec
            out.seqs = n_dec
            out.decode_context = self.decode_base + n_dec * clock
            self.generation_tokens += n_dec
        if pf is not None and pf_chunk:
            self._advance_prefill(pf, pf_chunk, out)
            if pf.computed == pf.num_tokens:
                self.prefiller = None
                self._sample_after_prefill(pf, out)
        if not preempted and self.prefiller is None:
            self._admit_waiting(out)
        self.generation_tokens += out.seqs - n_dec

        self.clock = clock + 1
        done = self.finish_at.pop(clock, None)
        if done:
            for r in done:
                self._leave_decode(r, clock + 1, finishing=True)
                if r.hashes_beyond_prompt:
                    self._cache_output_blocks(r, r.computed)
                self._finish(r, out)
        if self.finishing:
            for r in self.finishing:
                self._finish(r, out)
            self.finishing.clear()
        return out

    def _schedule_running_short_of_blocks(self, crossing: dict[Request, None]) -> tuple[bool, int]:
        """The slow path: walk the running list in order, allocating, preempting from the tail as vLLM.
        Returns (whether anything was preempted, the prefill chunk scheduled for the tail prefiller)."""
        pool = self.pool
        running = self.running
        order = list(running.values())  # running only shrinks from the tail here: order[:len(running)]
        preempted = False
        used = 0
        pf_chunk = 0
        i = 0
        while i < len(running):
            r = order[i]
            if r.decoding:
                used += 1
                if r not in crossing:
                    i += 1
                    continue
                need = 1
                chunk = 0
            else:
                chunk = min(r.num_tokens - r.computed, self.budget - used)
                need = self._blocks_needed(r, chunk)
            while need > pool.num_free:
                victim = order[len(running) - 1]
                self._preempt(victim)
                preempted = True
                if victim is r:
                    break
            if not r.running:
                break  # r itself was preempted: it was the tail, nothing after it
            if r.decoding:
                r.blocks.append(pool.allocate_one())
                if r.hashes_beyond_prompt:
                    self._cache_output_blocks(r, r.c0 + self.clock - r.g0)
            else:
                pool.allocate(need, r.blocks)
                pf_chunk = chunk
            i += 1
        return preempted, pf_chunk

    def _admit_waiting(self, out: SchedulerOutput) -> None:
        budget = self.budget - out.tokens
        waiting = self.waiting
        pool = self.pool
        bs = self.bs
        running = self.running
        while waiting and budget > 0 and len(running) < self.max_seqs:
            r = waiting[0]
            num_tokens = r.num_tokens
            hit: list[int] = []
            if self.prefix_caching and r.block_hashes:
                hit = pool.match_prefix(r.block_hashes, (num_tokens - 1) // bs)
            hit_tokens = len(hit) * bs
            chunk = min(num_tokens - hit_tokens, budget)
            new_blocks = -(-(hit_tokens + chunk) // bs) - len(hit)
            if new_blocks > pool.num_free - (pool.count_free_among(hit) if hit else 0):
                break
            waiting.popleft()
            self.waiting_tokens -= num_tokens
            if hit:
                pool.touch(hit)
            r.blocks = hit
            if self.prefix_caching:
                cache_until = min(len(r.block_hashes), (hit_tokens + chunk) // bs)
                pool.allocate_and_cache(new_blocks, hit, r.block_hashes, cache_until)
                r.num_hashed = max(len(hit) - new_blocks, cache_until)
            else:
                pool.allocate(new_blocks, hit)
                r.num_hashed = 0
            r.computed = hit_tokens
            if not r.scheduled_once:
                r.scheduled_once = True
                r.cached_tokens = hit_tokens
                self.prefix_queries += r.prompt_len
                self.prefix_hits += hit_tokens
            r.running = True
            running[r.request_id] = r
            self._advance_prefill(r, chunk, out)
            budget -= chunk
            if r.computed == num_tokens:
                self._sample_after_prefill(r, out)
            else:
                self.prefiller = r  # the budget is spent: it continues next step

    # ---- views --------------------------------------------------------------------------------------------
    def prefill_backlog(self) -> int:
        """Tokens still to prefill before a newly arriving request (waiting + the tail prefiller)."""
        pf = self.prefiller
        return self.waiting_tokens + (pf.num_tokens - pf.computed if pf is not None else 0)

    def steps_until_seat(self) -> int:
        """Steps until a request arriving now could take a seat (``max_num_seqs``), after the waiting ones
        ahead of it, FCFS: current decoders leave at their known finish step, the prefiller and each waiting
        request hold a seat for its prefill (at the budget left by the decoders) plus all its outputs."""
        free_seats = self.max_seqs - len(self.running)
        if free_seats > len(self.waiting):
            return 0
        per_step = max(1, self.budget - self.num_decoding)
        clock = self.clock
        leave = [r.finish_clock - clock + 1 for r in self.running.values() if r.decoding]
        pf = self.prefiller
        if pf is not None:
            leave.append(-(-(pf.num_tokens - pf.computed) // per_step) + pf.max_output - pf.num_output)
        leave += [0] * max(0, free_seats)
        heapq.heapify(leave)
        for r in self.waiting:
            start = heapq.heappop(leave)
            heapq.heappush(leave, start + -(-r.num_tokens // per_step) + r.max_output - r.num_output)
        return leave[0]

    def decode_context(self) -> int:
        return self.decode_base + self.num_decoding * self.clock
