"""Feature rows per (request, candidate engine), vectorised over candidates. Never the engine's identity:
the same weights score every engine, so engines can come and go.

The row carries: request size; the prefix index's match (tokens, fraction, freshness) and the uncached work;
the ledger's in-flight counters; the last scrape (running, waiting, KV usage, recent preemptions) and its age;
the engine's observed prefill rate and decode step time (learned online, rates.py); its GPU class when known;
and an analytic TTFT estimate (queued prefill work plus own uncached work over the observed rate) that the
model corrects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lodestar_vllm.core.ledger import Ledger
from lodestar_vllm.core.prefix_index import PrefixIndex
from lodestar_vllm.core.rates import RateTracker
from lodestar_vllm.core.types import InstanceView

SCHEMA_VERSION = 1

BASE_FEATURES = (
    "log_prompt_tokens",
    "match_fraction",
    "log_matched_tokens",
    "fresh_match_fraction",
    "log_uncached_tokens",
    "log_inflight_requests",
    "log_pending_prefill_tokens",
    "log_decode_tokens_inflight",
    "log_scraped_running",
    "log_scraped_waiting",
    "kv_cache_usage",
    "log_recent_preemptions",
    "log_metrics_age_s",
    "has_metrics",
    "log_prefill_rate",
    "log_decode_step_s",
    "log_analytic_ttft_s",
    "log_request_decode_tokens",
)
# Index of the analytic estimate: predictions are residuals on top of it.
ANALYTIC_COLUMN = BASE_FEATURES.index("log_analytic_ttft_s")
MAX_METRICS_AGE_S = 120.0


def feature_names(known_gpu_classes: Sequence[str]) -> tuple[str, ...]:
    return BASE_FEATURES + tuple(f"gpu_{c}" for c in known_gpu_classes) + ("gpu_unknown",)


def normalise_gpu_class(raw: str | None, known: Sequence[str]) -> str | None:
    """"A100-80GB" -> "A100" when A100 is a known class (longest known prefix wins); None when unknown."""
    if not raw:
        return None
    upper = raw.upper()
    best = None
    for cls in known:
        if upper.startswith(cls.upper()) and (best is None or len(cls) > len(best)):
            best = cls
    return best


def kv_wait_s(kv_usage: np.ndarray, capacity_tokens: np.ndarray, new_tokens: np.ndarray,
              inflight_requests: np.ndarray, decode_tokens_inflight: np.ndarray, step_s: np.ndarray) -> np.ndarray:
    """Expected wait for KV space: an engine whose cache is full of decoding requests has no prefill queued,
    yet cannot admit new work until those requests finish and free their blocks.

    The shortfall (cached context at the last scrape plus the prefill work not yet admitted, beyond capacity)
    frees at the pace the running batch drains: a request holds its blocks for about its decode budget of
    steps, so a fraction f of the cache frees in about f x (decode tokens per request) x step.
    """
    cap = np.maximum(capacity_tokens, 1.0)
    shortfall = np.clip(np.clip(kv_usage, 0.0, 1.0) * cap + new_tokens - cap, 0.0, None) / cap
    per_request = decode_tokens_inflight / np.maximum(inflight_requests, 1.0)
    return np.where(capacity_tokens > 0, shortfall * per_request * step_s, 0.0)


@dataclass(slots=True)
class CandidateFeatures:
    urls: list[str]
    matrix: np.ndarray  # (n, F)
    prompt_tokens: int
    matched_tokens: np.ndarray
    uncached_tokens: np.ndarray
    pending_prefill: np.ndarray
    analytic_ttft: np.ndarray  # seconds
    kv_usage: np.ndarray
    has_metrics: np.ndarray
    gpu_classes: list[str | None]


class FeatureBuilder:
    def __init__(self, index: PrefixIndex, ledger: Ledger, rates: RateTracker,
                 known_gpu_classes: Sequence[str], max_tracked_urls: int = 4096) -> None:
        self.index = index
        self.ledger = ledger
        self.rates = rates
        self.known = tuple(known_gpu_classes)
        self.names = feature_names(self.known)
        self._class_column = {c: len(BASE_FEATURES) + i for i, c in enumerate(self.known)}
        self._unknown_column = len(self.names) - 1
        self._class_cache: dict[str, str | None] = {}
        # url -> (scraped_at, preemptions_total, preemptions in the last scrape interval)
        self._preempt: dict[str, tuple[float, float, float]] = {}
        self._max_urls = max_tracked_urls

    @property
    def width(self) -> int:
        return len(self.names)

    def gpu_class(self, view: InstanceView) -> str | None:
        raw = view.hardware.gpu_class if view.hardware is not None else None
        if raw is None:
            return None
        cls = self._class_cache.get(raw, "")
        if cls == "":
            cls = self._class_cache[raw] = normalise_gpu_class(raw, self.known)
        return cls

    def build(self, prompt_tokens: int, decode_tokens: int, hashes: Sequence[int],
              candidates: Sequence[InstanceView], now: float) -> CandidateFeatures:
        n = len(candidates)
        urls = [c.url for c in candidates]
        classes = [self.gpu_class(c) for c in candidates]
        block = self.index.block_tokens
        for c in candidates:
            m = c.metrics
            if m is not None and m.num_gpu_blocks and m.block_size:
                self.index.set_capacity_tokens(c.url, m.num_gpu_blocks * m.block_size)

        matched_blocks, fresh = self.index.match(hashes, urls, now)
        p = float(max(prompt_tokens, 1))
        # vLLM always recomputes the last prompt token, so at most P - 1 tokens can hit.
        matched = np.minimum(matched_blocks * block, p - 1)
        uncached = p - matched
        req, pending, decode = self.ledger.counters(urls)
        running = np.zeros(n)
        waiting = np.zeros(n)
        kv = np.zeros(n)
        kv_capacity = np.zeros(n)  # tokens; 0 when the engine does not report its cache size
        preempt = np.zeros(n)
        age = np.full(n, MAX_METRICS_AGE_S)
        has = np.zeros(n)
        for i, c in enumerate(candidates):
            m = c.metrics
            if m is None:
                continue
            running[i] = m.num_running
            waiting[i] = m.num_waiting
            kv[i] = m.kv_cache_usage
            if m.num_gpu_blocks and m.block_size:
                kv_capacity[i] = m.num_gpu_blocks * m.block_size
            preempt[i] = self._recent_preemptions(c.url, m.scraped_at, m.num_preemptions_total)
            age[i] = min(max(now - m.scraped_at, 0.0), MAX_METRICS_AGE_S)
            has[i] = 1.0
        rate, step = self.rates.arrays(urls, classes)
        analytic = (pending + uncached) / rate + step + kv_wait_s(kv, kv_capacity, pending + uncached, req,
                                                                  decode, step)

        x = np.empty((n, self.width), dtype=np.float64)
        x[:, 0] = math.log1p(p)
        x[:, 1] = matched / p
        x[:, 2] = np.log1p(matched)
        x[:, 3] = x[:, 1] * fresh
        x[:, 4] = np.log1p(uncached)
        x[:, 5] = np.log1p(req)
        x[:, 6] = np.log1p(np.maximum(pending, 0.0))
        x[:, 7] = np.log1p(np.maximum(decode, 0.0))
        x[:, 8] = np.log1p(np.maximum(running, 0.0))
        x[:, 9] = np.log1p(np.maximum(waiting, 0.0))
        x[:, 10] = np.clip(kv, 0.0, 1.0)
        x[:, 11] = np.log1p(np.maximum(preempt, 0.0))
        x[:, 12] = np.log1p(age)
        x[:, 13] = has
        x[:, 14] = np.log(rate)
        x[:, 15] = np.log(step)
        x[:, 16] = np.log(analytic)
        x[:, 17] = math.log1p(max(decode_tokens, 0))
        x[:, len(BASE_FEATURES):] = 0.0
        for i, cls in enumerate(classes):
            x[i, self._class_column[cls] if cls is not None else self._unknown_column] = 1.0
        return CandidateFeatures(urls, x, int(p), matched, uncached, pending, analytic, kv, has, classes)

    def _recent_preemptions(self, url: str, scraped_at: float, total: float) -> float:
        prev = self._preempt.get(url)
        if prev is None:
            if len(self._preempt) >= self._max_urls:
                self._preempt.pop(next(iter(self._preempt)))
            self._preempt[url] = (scraped_at, total, 0.0)
            return 0.0
        if scraped_at > prev[0]:
            delta = max(total - prev[1], 0.0)
            self._preempt[url] = (scraped_at, total, delta)
            return delta
        return prev[2]
