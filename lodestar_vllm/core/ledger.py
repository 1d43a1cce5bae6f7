"""In-flight accounting: what the router sent where, updated at dispatch, joined with outcomes.

Scraped engine metrics are seconds old; the ledger is exact as of the last dispatch, which stops bursts from
herding onto the engine that looked idle at the last scrape. Per engine it counts requests in flight,
uncached prefill tokens not yet started (cleared at the first token) and decode tokens in flight.

Every structure is bounded: records expire after a TTL (an outcome that never arrives must not leak) and a
cap evicts the oldest record when full; both are counted. A ring of recent decision explanations serves
``explain(request_id)``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(slots=True)
class DecisionRecord:
    request_id: str
    url: str
    dispatched_at: float
    path: str
    reason: str
    prompt_tokens: int
    uncached_tokens: int
    decode_tokens: int
    # Router-estimated prefill work queued ahead of this request at ``url`` when it was dispatched.
    prefill_ahead: int = 0
    predicted_ttft: float | None = None
    analytic_ttft: float | None = None
    # Feature row used for the choice (training input once the outcome arrives).
    features: np.ndarray | None = None
    # What the fallback would have chosen, with the analytic estimate there (guardrail, shadow gain).
    fallback_url: str | None = None
    fallback_analytic_ttft: float | None = None
    prefill_open: bool = True
    first_token_at: float | None = None


class Ledger:
    def __init__(self, max_records: int = 100_000, ttl_s: float = 900.0, explain_ring: int = 2048) -> None:
        if max_records <= 0 or ttl_s <= 0 or explain_ring <= 0:
            raise ValueError("ledger bounds must be positive")
        self.max_records = max_records
        self.ttl_s = ttl_s
        self.explain_ring = explain_ring
        # Insertion order == dispatch order, so the oldest record is always first.
        self._records: OrderedDict[str, DecisionRecord] = OrderedDict()
        self._requests: dict[str, int] = {}
        self._prefill: dict[str, int] = {}
        self._decode: dict[str, int] = {}
        self._explain: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.expired = 0
        self.evicted = 0
        self.duplicates = 0

    # --- dispatch / outcome -------------------------------------------------------------------------------
    def dispatch(self, record: DecisionRecord) -> None:
        self.expire(record.dispatched_at)
        old = self._records.pop(record.request_id, None)
        if old is not None:
            # A retry under the same id (failover): the earlier attempt's outcome will not be reported again.
            self.duplicates += 1
            self._release(old)
        while len(self._records) >= self.max_records:
            _, oldest = self._records.popitem(last=False)
            self._release(oldest)
            self.evicted += 1
        self._records[record.request_id] = record
        url = record.url
        self._requests[url] = self._requests.get(url, 0) + 1
        self._prefill[url] = self._prefill.get(url, 0) + record.uncached_tokens
        self._decode[url] = self._decode.get(url, 0) + record.decode_tokens

    def first_token(self, request_id: str, now: float) -> DecisionRecord | None:
        record = self._records.get(request_id)
        if record is None or not record.prefill_open:
            return record
        record.prefill_open = False
        record.first_token_at = now
        self._prefill[record.url] -= record.uncached_tokens
        return record

    def complete(self, request_id: str) -> DecisionRecord | None:
        """The attempt ended: remove its record and counters; None when unknown (expired, evicted)."""
        record = self._records.pop(request_id, None)
        if record is not None:
            self._release(record)
        return record

    def expire(self, now: float) -> int:
        cutoff = now - self.ttl_s
        count = 0
        while self._records:
            oldest = next(iter(self._records.values()))
            if oldest.dispatched_at >= cutoff:
                break
            self._records.popitem(last=False)
            self._release(oldest)
            count += 1
        self.expired += count
        return count

    def _release(self, record: DecisionRecord) -> None:
        url = record.url
        self._requests[url] -= 1
        if record.prefill_open:
            self._prefill[url] -= record.uncached_tokens
        self._decode[url] -= record.decode_tokens
        if self._requests[url] <= 0:
            # Drop idle engines' keys so that departed urls do not accumulate.
            for table in (self._requests, self._prefill, self._decode):
                table.pop(url, None)

    # --- reads --------------------------------------------------------------------------------------------
    def counters(self, urls: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(requests, pending prefill tokens, decode tokens) in flight per url."""
        req = np.fromiter((self._requests.get(u, 0) for u in urls), dtype=np.float64, count=len(urls))
        pre = np.fromiter((self._prefill.get(u, 0) for u in urls), dtype=np.float64, count=len(urls))
        dec = np.fromiter((self._decode.get(u, 0) for u in urls), dtype=np.float64, count=len(urls))
        return req, pre, dec

    def get(self, request_id: str) -> DecisionRecord | None:
        return self._records.get(request_id)

    def __len__(self) -> int:
        return len(self._records)

    def per_url(self) -> dict[str, dict[str, int]]:
        return {u: {"requests": self._requests.get(u, 0), "prefill_tokens": self._prefill.get(u, 0),
                    "decode_tokens": self._decode.get(u, 0)} for u in self._requests}

    # --- explanations -------------------------------------------------------------------------------------
    def remember(self, request_id: str, explanation: dict[str, Any]) -> None:
        self._explain[request_id] = explanation
        self._explain.move_to_end(request_id)
        while len(self._explain) > self.explain_ring:
            self._explain.popitem(last=False)

    def explanation(self, request_id: str) -> dict[str, Any] | None:
        return self._explain.get(request_id)
