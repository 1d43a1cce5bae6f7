"""The guardrail: if requests routed by the model do worse than the fallback would have, route with the
fallback until a newer model has had time to recover.

For every model-routed request we know the observed TTFT and the analytic estimate of the fallback's own
pick; the estimate is calibrated by the running observed/estimated ratio over all outcomes (the analytic
estimate is biased in a load-dependent way, and the bias applies to both sides). The guardrail trips when,
over a full window, the model path's total observed TTFT exceeds the calibrated fallback estimate by more
than ``margin``; it clears after ``cooldown_s`` once a newer model version has been swapped in (or after twice
the cooldown in any case), and the window starts afresh.
"""

from __future__ import annotations

import logging
import math
from collections import deque

log = logging.getLogger("lodestar_vllm.guardrail")


class Guardrail:
    def __init__(self, window: int, margin: float, cooldown_s: float) -> None:
        self.window = window
        self.margin = margin
        self.cooldown_s = cooldown_s
        self._pairs: deque[tuple[float, float]] = deque(maxlen=window)
        self._log_bias = 0.0
        self._bias_n = 0
        self.active = False
        self.tripped_at: float | None = None
        self.tripped_version = 0
        self.trips = 0

    def observe_calibration(self, observed: float, analytic: float) -> None:
        if observed > 0 and analytic > 0:
            a = max(0.02, 1.0 / (self._bias_n + 1))
            self._log_bias += a * (math.log(observed / analytic) - self._log_bias)
            self._bias_n += 1

    @property
    def bias(self) -> float:
        return math.exp(self._log_bias)

    def observe_model_outcome(self, observed: float, fallback_analytic: float, now: float,
                              model_version: int) -> bool:
        """Record one model-path outcome; returns True when this outcome tripped the guardrail."""
        if self.active or not (observed > 0 and fallback_analytic > 0):
            return False
        self._pairs.append((observed, fallback_analytic))
        if len(self._pairs) < self.window:
            return False
        obs = sum(p[0] for p in self._pairs)
        est = self.bias * sum(p[1] for p in self._pairs)
        if obs > (1.0 + self.margin) * est:
            self.active = True
            self.tripped_at = now
            self.tripped_version = model_version
            self.trips += 1
            self._pairs.clear()
            log.warning("lodestar guardrail: learned path worse than fallback, routing with fallback",
                        extra={"event": "guardrail_trip", "observed_s": round(obs, 4),
                               "fallback_estimate_s": round(est, 4), "window": self.window})
            return True
        return False

    def maybe_recover(self, now: float, model_version: int) -> bool:
        if not self.active or self.tripped_at is None:
            return False
        waited = now - self.tripped_at
        if (waited >= self.cooldown_s and model_version > self.tripped_version) or waited >= 2 * self.cooldown_s:
            self.active = False
            self._pairs.clear()
            log.info("lodestar guardrail: learned path restored",
                     extra={"event": "guardrail_clear", "waited_s": round(waited, 3), "model_version": model_version})
            return True
        return False
