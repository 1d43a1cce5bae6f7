"""One outcome per routed attempt, delivered to the policy exactly once.

A decision is registered at route time and parked in a ContextVar: the host awaits nothing between
``route_request`` returning and starting the attempt, and the attempt runs in the same task, so the dispatch that
follows in the same context is the one that carries our decision; it claims it by (url, context). The attempt
is then observed through the host's response stream: first body chunk -> ``on_first_token``; end of stream ->
OK; an exception -> FAILED (connection errors before the first byte included, which the host's own
``on_request_complete`` never reports); cancellation or the stream being closed early -> ABORTED (the client
went away). Decisions no dispatch ever claimed are failed after ``pending_timeout`` by ``sweep``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from lodestar_vllm.core.types import Decision, Outcome, OutcomeStatus, RequestInfo
from lodestar_vllm.policies.base import RoutingPolicy

logger = logging.getLogger(__name__)

# Tail of the response kept for token usage (vLLM puts `usage` last, in the body or in the final SSE chunk).
_USAGE_TAIL_BYTES = 8192
_USAGE_RE = {
    key: re.compile(rb'"' + key.encode() + rb'"\s*:\s*(\d+)')
    for key in ("prompt_tokens", "completion_tokens", "cached_tokens")
}


@dataclass
class Attempt:
    """A routed attempt: the decision, and once dispatched, what the host did with it."""

    attempt_id: str  # the request id the policy saw
    url: str
    request: RequestInfo
    decision: Decision
    routed_at: float
    host_request_id: str | None = None
    dispatched_at: float | None = None
    first_token_at: float | None = None
    http_status: int | None = None
    outcome: Outcome | None = None
    tail: bytearray = field(default_factory=bytearray)


_PENDING: ContextVar[Attempt | None] = ContextVar("lodestar_pending_attempt", default=None)


class LifecycleTracker:
    """Owns every attempt from route to outcome; the only caller of the policy's observation hooks."""

    def __init__(
        self,
        policy: RoutingPolicy,
        clock: Callable[[], float],
        pending_timeout: float = 60.0,
        max_attempts: int = 100_000,
        attempt_timeout: float = 3600.0,
        on_finished: Callable[[Attempt], None] | None = None,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self.pending_timeout = pending_timeout
        # A dispatched attempt whose end never arrives (a lost listener event, a stream nobody closes) is
        # failed after this long, so nothing stays "in flight" for the policy forever.
        self.attempt_timeout = attempt_timeout
        self.max_attempts = max_attempts
        self._on_finished = on_finished
        self._pending: OrderedDict[str, Attempt] = OrderedDict()  # routed, not yet dispatched
        self._active: dict[str, Attempt] = {}  # dispatched, not yet finished
        self._ids = itertools.count(1)
        self.delivered: dict[OutcomeStatus, int] = {status: 0 for status in OutcomeStatus}
        self.hook_errors = 0

    # --- ids -----------------------------------------------------------------------------------------
    def new_attempt_id(self, header_request_id: str | None) -> str:
        """Unique per attempt: the client's X-Request-Id when given (failover retries get a suffix)."""
        n = next(self._ids)
        if header_request_id:
            base = header_request_id[:200]
            return base if base not in self._pending and base not in self._active else f"{base}#{n}"
        return f"lodestar-{n}"

    # --- route time ----------------------------------------------------------------------------------
    def register(self, attempt: Attempt) -> None:
        stale = _PENDING.get()
        if stale is not None and stale.attempt_id in self._pending:
            # Routed again in this context without dispatching the previous decision: it never ran.
            self._finish(self._pending.pop(stale.attempt_id), OutcomeStatus.FAILED, error="not dispatched")
        self._pending[attempt.attempt_id] = attempt
        _PENDING.set(attempt)
        while len(self._pending) > self.max_attempts:  # bounded even if the host stops dispatching
            _, oldest = self._pending.popitem(last=False)
            self._finish(oldest, OutcomeStatus.FAILED, error="not dispatched (pending table full)")

    # --- dispatch time -------------------------------------------------------------------------------
    def claim(self, backend_url: str, host_request_id: str | None) -> Attempt | None:
        """The attempt this context routed to ``backend_url``, or None when the dispatch was not ours."""
        attempt = _PENDING.get()
        if attempt is None or attempt.url != backend_url or attempt.attempt_id not in self._pending:
            return None
        _PENDING.set(None)
        del self._pending[attempt.attempt_id]
        attempt.host_request_id = host_request_id
        attempt.dispatched_at = self._clock()
        self._active[attempt.attempt_id] = attempt
        return attempt

    def first_token(self, attempt: Attempt) -> None:
        if attempt.first_token_at is not None or attempt.outcome is not None:
            return
        attempt.first_token_at = self._clock()
        try:
            self.policy.on_first_token(attempt.attempt_id, attempt.url, attempt.first_token_at)
        except Exception:
            self.hook_errors += 1
            logger.exception("lodestar policy.on_first_token failed (request %s)", attempt.attempt_id)

    def finish(self, attempt: Attempt, status: OutcomeStatus, error: str | None = None,
               usage: dict[str, int] | None = None) -> None:
        self._active.pop(attempt.attempt_id, None)
        self._finish(attempt, status, error, usage)

    def _finish(self, attempt: Attempt, status: OutcomeStatus, error: str | None = None,
                usage: dict[str, int] | None = None) -> None:
        if attempt.outcome is not None:
            return  # exactly once, whatever path got here first
        usage = usage if usage is not None else _usage(bytes(attempt.tail))
        attempt.outcome = Outcome(
            request_id=attempt.attempt_id,
            url=attempt.url,
            dispatched_at=attempt.dispatched_at if attempt.dispatched_at is not None else attempt.routed_at,
            status=status,
            first_token_at=attempt.first_token_at,
            finished_at=self._clock(),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            cached_tokens=usage.get("cached_tokens"),
            http_status=attempt.http_status,
            error=error,
        )
        attempt.tail = bytearray()
        self.delivered[status] += 1
        try:
            self.policy.on_outcome(attempt.outcome)
        except Exception:
            self.hook_errors += 1
            logger.exception("lodestar policy.on_outcome failed (request %s)", attempt.attempt_id)
        if self._on_finished is not None:
            self._on_finished(attempt)

    def sweep(self) -> int:
        """Fail decisions never dispatched within ``pending_timeout`` and attempts with no end after
        ``attempt_timeout``; returns how many."""
        now = self._clock()
        expired = [a for a in self._pending.values() if a.routed_at < now - self.pending_timeout]
        for attempt in expired:
            del self._pending[attempt.attempt_id]
            self._finish(attempt, OutcomeStatus.FAILED, error="not dispatched (timeout)")
        stuck = [a for a in self._active.values() if (a.dispatched_at or a.routed_at) < now - self.attempt_timeout]
        for attempt in stuck:
            self.finish(attempt, OutcomeStatus.FAILED, error="no end of the attempt observed (timeout)")
        return len(expired) + len(stuck)

    def counts(self) -> dict[str, Any]:
        return {
            "pending": len(self._pending),
            "in_flight": len(self._active),
            "outcomes": {status.value: n for status, n in self.delivered.items()},
            "policy_hook_errors": self.hook_errors,
        }

    # --- observing the host's response stream --------------------------------------------------------
    async def observe(self, attempt: Attempt, stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """Re-yield the host's ``process_request`` stream (first item ``(headers, status)``, then body chunks)
        and turn what happens to it into the attempt's outcome."""
        status = OutcomeStatus.ABORTED
        error: str | None = "client went away before the response ended"
        try:
            async for item in stream:
                if attempt.http_status is None and isinstance(item, tuple) and len(item) == 2:
                    attempt.http_status = _int_or_none(item[1])
                elif isinstance(item, bytes | bytearray | memoryview):
                    if item:
                        self.first_token(attempt)
                    _keep_tail(attempt.tail, bytes(item))
                yield item
            if attempt.http_status is not None and attempt.http_status >= 400:
                status, error = OutcomeStatus.FAILED, f"HTTP {attempt.http_status}"
            else:
                status, error = OutcomeStatus.OK, None
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            status, error = OutcomeStatus.FAILED, f"{type(exc).__name__}: {exc}"[:500]
            raise
        finally:
            self.finish(attempt, status, error)
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:  # close the host's generator now rather than at garbage collection
                await aclose()


def _keep_tail(tail: bytearray, chunk: bytes) -> None:
    tail.extend(chunk[-_USAGE_TAIL_BYTES:])
    if len(tail) > _USAGE_TAIL_BYTES:
        del tail[: len(tail) - _USAGE_TAIL_BYTES]


def _usage(tail: bytes) -> dict[str, int]:
    found: dict[str, int] = {}
    for key, pattern in _USAGE_RE.items():
        matches = pattern.findall(tail)
        if matches:
            found[key] = int(matches[-1])
    return found


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
