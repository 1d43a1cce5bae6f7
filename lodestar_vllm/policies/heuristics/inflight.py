"""Router-side in-flight accounting, updated at dispatch time.

Every router that balances load on its own view (AIBrix's realtime running requests, llm-d's in-flight load
producer, SGLang's worker load, Dynamo's active sequences) counts what it sent and has not seen finish. Counting
at dispatch (not at the next /metrics scrape) is what keeps a burst from herding onto one engine.

Each record carries two amounts in whatever unit the owning policy chooses (tokens, blocks): ``prefill`` is
released at the first token, ``held`` at the end of the request. Records whose end never arrives (a lost
outcome) expire after ``ttl`` seconds so counters cannot drift upward forever, as llm-d's producer does with its
request TTL.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class _Record:
    url: str
    dispatched_at: float
    prefill: float
    held: float
    in_prefill: bool = True


@dataclass(slots=True)
class InFlightLoad:
    """What one engine has in flight, as this router counted it."""

    requests: int = 0
    prefill_requests: int = 0
    prefill: float = 0.0
    held: float = 0.0

    @property
    def decode_requests(self) -> int:
        return self.requests - self.prefill_requests


class InFlightTracker:
    """Per-url in-flight requests and amounts; O(1) per event, bounded by ``max_records``."""

    def __init__(self, ttl: float = 600.0, max_records: int = 100_000) -> None:
        if ttl <= 0 or max_records <= 0:
            raise ValueError(f"ttl and max_records must be positive, got ttl={ttl} max_records={max_records}")
        self.ttl = ttl
        self.max_records = max_records
        # Dispatch order == age order, so expiry pops from the front.
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._loads: dict[str, InFlightLoad] = {}

    def __len__(self) -> int:
        return len(self._records)

    def dispatch(self, request_id: str, url: str, now: float, prefill: float = 0.0, held: float = 0.0) -> None:
        if request_id in self._records:  # a retry reusing the id: the earlier attempt is over
            self.finish(request_id)
        record = _Record(url, now, max(prefill, 0.0), max(held, 0.0))
        self._records[request_id] = record
        load = self._loads.get(url)
        if load is None:
            load = self._loads[url] = InFlightLoad()
        load.requests += 1
        load.prefill_requests += 1
        load.prefill += record.prefill
        load.held += record.held
        while len(self._records) > self.max_records:
            self.finish(next(iter(self._records)))

    def first_token(self, request_id: str) -> None:
        record = self._records.get(request_id)
        if record is None or not record.in_prefill:
            return
        record.in_prefill = False
        load = self._loads[record.url]
        load.prefill_requests -= 1
        load.prefill -= record.prefill

    def finish(self, request_id: str) -> None:
        record = self._records.pop(request_id, None)
        if record is None:
            return
        load = self._loads.get(record.url)
        if load is None:  # the url was forgotten while the request ran
            return
        load.requests -= 1
        load.held -= record.held
        if record.in_prefill:
            load.prefill_requests -= 1
            load.prefill -= record.prefill
        if load.requests <= 0:
            # Float residue from many += / -= must not read as phantom load.
            del self._loads[record.url]

    def expire(self, now: float) -> int:
        """Drop records older than ``ttl`` (their outcome was lost); returns how many."""
        dropped = 0
        horizon = now - self.ttl
        while self._records:
            request_id, record = next(iter(self._records.items()))
            if record.dispatched_at >= horizon:
                break
            self.finish(request_id)
            dropped += 1
        return dropped

    def forget(self, urls: Iterable[str]) -> None:
        """Drop every record and counter of engines that left the pool."""
        gone = set(urls)
        if not gone:
            return
        for request_id in [rid for rid, rec in self._records.items() if rec.url in gone]:
            del self._records[request_id]
        for url in gone:
            self._loads.pop(url, None)

    def load(self, url: str) -> InFlightLoad:
        """The live counters of ``url`` (read them, never write them)."""
        return self._loads.get(url) or InFlightLoad()

    def requests(self, url: str) -> int:
        load = self._loads.get(url)
        return load.requests if load is not None else 0

    def urls(self) -> list[str]:
        return list(self._loads)
