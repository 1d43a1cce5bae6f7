"""Per-engine hardware speed learned online from outcomes: a signal that needs no labels or profiles.

Each finished request tells how fast its engine got through prefill work (tokens queued ahead plus its own
uncached tokens, over its TTFT) and how long a decode step took ((e2e - TTFT) / (output tokens - 1)). An EWMA
in log space per url tracks them; the same samples feed a per-GPU-class EWMA, so a new engine of a known class
starts from its class's speed (and the class table survives checkpoints, where urls do not).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

GLOBAL = "*"


class _Ewma:
    __slots__ = ("log_value", "count")

    def __init__(self, value: float, count: int = 0) -> None:
        self.log_value = math.log(value)
        self.count = count

    def update(self, value: float, alpha: float) -> None:
        # Faster at first (1/n), then a fixed alpha: a few samples already give a usable estimate.
        a = max(alpha, 1.0 / (self.count + 1))
        self.log_value += a * (math.log(value) - self.log_value)
        self.count += 1

    @property
    def value(self) -> float:
        return math.exp(self.log_value)


class RateTracker:
    def __init__(self, alpha: float = 0.1, prior_prefill_tokens_per_s: float = 8000.0,
                 prior_decode_step_s: float = 0.02, min_tokens: int = 128, max_urls: int = 4096) -> None:
        self.alpha = alpha
        self.min_tokens = min_tokens
        self.max_urls = max_urls
        self.prior_prefill = prior_prefill_tokens_per_s
        self.prior_decode = prior_decode_step_s
        self._prefill: dict[str, _Ewma] = {}
        self._decode: dict[str, _Ewma] = {}
        self._class_prefill: dict[str, _Ewma] = {}
        self._class_decode: dict[str, _Ewma] = {}

    # --- learning -----------------------------------------------------------------------------------------
    def observe(self, url: str, gpu_class: str | None, prefill_work_tokens: float, ttft: float | None,
                decode_time: float | None, completion_tokens: int | None) -> None:
        cls = gpu_class or GLOBAL
        if ttft is not None and ttft > 0 and prefill_work_tokens >= self.min_tokens:
            rate = prefill_work_tokens / max(ttft, 1e-4)
            if math.isfinite(rate) and rate > 0:
                self._update(self._prefill, url, rate, self.prior_prefill)
                self._update(self._class_prefill, cls, rate, self.prior_prefill)
        if decode_time is not None and completion_tokens is not None and completion_tokens >= 2:
            step = decode_time / (completion_tokens - 1)
            if math.isfinite(step) and step > 0:
                self._update(self._decode, url, step, self.prior_decode)
                self._update(self._class_decode, cls, step, self.prior_decode)

    def _update(self, table: dict[str, _Ewma], key: str, value: float, prior: float) -> None:
        entry = table.get(key)
        if entry is None:
            if len(table) >= self.max_urls:
                table.pop(next(iter(table)))  # oldest-inserted url: bounded memory with churning urls
            entry = table[key] = _Ewma(prior)
        entry.update(value, self.alpha)

    # --- reads --------------------------------------------------------------------------------------------
    def prefill_rate(self, url: str, gpu_class: str | None) -> float:
        return self._read(self._prefill, self._class_prefill, url, gpu_class, self.prior_prefill)

    def decode_step(self, url: str, gpu_class: str | None) -> float:
        return self._read(self._decode, self._class_decode, url, gpu_class, self.prior_decode)

    @staticmethod
    def _read(table: Mapping[str, _Ewma], classes: Mapping[str, _Ewma], url: str, gpu_class: str | None,
              prior: float) -> float:
        entry = table.get(url)
        if entry is not None and entry.count >= 3:
            return entry.value
        by_class = classes.get(gpu_class or GLOBAL)
        if by_class is not None and by_class.count >= 3:
            return by_class.value
        return entry.value if entry is not None else prior

    def arrays(self, urls: Sequence[str], classes: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        n = len(urls)
        pre = np.fromiter((self.prefill_rate(u, c) for u, c in zip(urls, classes, strict=True)), np.float64, n)
        dec = np.fromiter((self.decode_step(u, c) for u, c in zip(urls, classes, strict=True)), np.float64, n)
        return pre, dec

    def samples(self, url: str) -> int:
        entry = self._prefill.get(url)
        return 0 if entry is None else entry.count

    # --- status / checkpoint ------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "per_url": {u: {"prefill_tokens_per_s": round(e.value, 1), "samples": e.count,
                            "decode_step_s": round(self.decode_step(u, None), 5)}
                        for u, e in self._prefill.items()},
            "per_class": self.export_classes(),
        }

    def export_classes(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for cls, e in self._class_prefill.items():
            out.setdefault(cls, {})["prefill_tokens_per_s"] = e.value
            out[cls]["prefill_samples"] = e.count
        for cls, e in self._class_decode.items():
            out.setdefault(cls, {})["decode_step_s"] = e.value
            out[cls]["decode_samples"] = e.count
        return out

    def import_classes(self, classes: Mapping[str, Mapping[str, float]]) -> None:
        for cls, values in classes.items():
            if values.get("prefill_tokens_per_s", 0) > 0:
                self._class_prefill[cls] = _Ewma(float(values["prefill_tokens_per_s"]),
                                                 int(values.get("prefill_samples", 3)))
            if values.get("decode_step_s", 0) > 0:
                self._class_decode[cls] = _Ewma(float(values["decode_step_s"]), int(values.get("decode_samples", 3)))
