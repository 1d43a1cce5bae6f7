"""One router replica's part in model sharing on Kubernetes: the sharing core driven by a Lease elector and
the ConfigMap board. Two background tasks, both off the request path:

- follow: watch the shared-model ConfigMap and adopt newer versions (re-watching after any end, backing off
  after errors);
- tick: every ``tick_s``, offer a candidate when due and, while holding the lease, publish when due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from lodestar_vllm.integrations.kubernetes.backoff import Backoff
from lodestar_vllm.integrations.kubernetes.lease import LeaseElector
from lodestar_vllm.integrations.kubernetes.model_board import (
    CheckpointTooLarge,
    ConfigMapModelBoard,
    CorruptRecord,
)
from lodestar_vllm.integrations.kubernetes.sharing import SharingCore

log = logging.getLogger(__name__)


@dataclass
class ReplicaStats:
    follow_errors: int = 0
    tick_errors: int = 0
    too_large: int = 0  # checkpoints that fit neither a ConfigMap nor (absent) the shared volume


class SharedModelReplica:
    def __init__(
        self,
        core: SharingCore,
        board: ConfigMapModelBoard,
        elector: LeaseElector,
        *,
        tick_s: float = 1.0,
        watch_timeout_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        if tick_s <= 0:
            raise ValueError("tick_s must be positive")
        self.core = core
        self.board = board
        self.elector = elector
        self._tick_s = tick_s
        self._watch_timeout_s = watch_timeout_s
        # Wall clock: candidate freshness is compared across pods (NTP-synchronised nodes).
        self._clock = clock
        self._new_backoff = backoff
        self.stats = ReplicaStats()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self._tasks:
            return
        await self.elector.start()
        self._tasks = [asyncio.create_task(self._follow()), asyncio.create_task(self._tick_loop())]

    async def close(self, release: bool = True) -> None:
        """Stop; ``release=False`` leaves the lease to expire (what a crash looks like to the others)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.elector.close(release=release)

    async def tick(self) -> None:
        """One pass of the publishing side (public so that tests and tools can drive it directly)."""
        now = self._clock()
        if self.core.candidate_due(now):
            candidate = self.core.make_candidate(now)
            if candidate is not None:
                try:
                    if await self.board.post_candidate(candidate):
                        self.core.candidate_posted(candidate)
                except CheckpointTooLarge as error:
                    self.stats.too_large += 1
                    log.warning("candidate not shared: %s", error)
        if self.elector.is_leader and self.core.publish_due(now):
            floor = 0
            try:
                shared = await self.board.read_shared()
            except CorruptRecord:
                # A corrupt shared model is replaced by the next publish (any lineage), above its version.
                shared, floor = None, await self.board.stored_version() or 0
            record = self.core.choose(await self.board.candidates(), shared, now, min_version=floor)
            if record is not None:
                # The lease may have moved while we read: a stale leader must not publish.
                if not self.elector.is_leader:
                    return
                self.core.published(record, await self.board.publish(record))

    async def _tick_loop(self) -> None:
        backoff = self._new_backoff()
        while True:
            try:
                await self.tick()
                backoff.reset()
                await asyncio.sleep(self._tick_s)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # API errors, full volume, a learner callable misbehaving
                self.stats.tick_errors += 1
                delay = max(self._tick_s, backoff.next_delay())
                log.warning("model sharing tick failed: %r; retrying in %.1f s", error, delay)
                await asyncio.sleep(delay)

    async def _follow(self) -> None:
        backoff = self._new_backoff()
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                async for record in self.board.watch_shared(self._watch_timeout_s):
                    self.core.adopt(record)
                    backoff.reset()
                if loop.time() - started < 1.0:  # a watch that ends at once must not become a busy loop
                    await asyncio.sleep(backoff.next_delay())
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.stats.follow_errors += 1
                delay = backoff.next_delay()
                log.warning("shared model watch failed: %r; retrying in %.1f s", error, delay)
                await asyncio.sleep(delay)
