"""The guardrail: if requests routed by the model do worse than the fallback's, route with the fallback until
a newer model has had time to recover.

The comparison is a randomised control arm: a small fraction of requests (``control_fraction``) is routed by
the fallback even when the model is trusted. Both arms share the same fleet and load at the same time, so
their observed TTFTs compare fairly (estimates of what the fallback "would have" got are biased: the pick
that minimises an estimate is the one whose estimate is most optimistic). The guardrail trips when, over the
control arm's time span, the model arm's mean TTFT exceeds the control arm's by more than ``margin`` at two
evaluations in a row (with at least ``window`` model samples in the span); it clears after
``cooldown_s`` once a newer model version has been swapped in (or after twice the cooldown in any case).
"""

from __future__ import annotations

import logging
from collections import deque

log = logging.getLogger("lodestar_vllm.guardrail")

MIN_CONTROL = 30
MAX_MODEL_SAMPLES = 8192
EVALUATE_EVERY = 64


class Guardrail:
    def __init__(self, window: int, margin: float, cooldown_s: float, control_samples: int = 60) -> None:
        self.window = window
        self.margin = margin
        self.cooldown_s = cooldown_s
        # (time, TTFT) per arm. The model arm is compared over the control arm's time span only: load varies,
        # and a comparison of different periods would judge the load, not the router.
        self._model: deque[tuple[float, float]] = deque(maxlen=MAX_MODEL_SAMPLES)
        self._control: deque[tuple[float, float]] = deque(maxlen=max(MIN_CONTROL, control_samples))
        self._since_eval = 0
        self._strikes = 0
        self.active = False
        self.tripped_at: float | None = None
        self.tripped_version = 0
        self.trips = 0
        self.last_comparison: tuple[float, float, int] | None = None

    def observe(self, observed: float, control: bool, now: float, model_version: int) -> bool:
        """Record one outcome of the model arm or the control arm; True when this outcome tripped."""
        if not observed > 0:
            return False
        (self._control if control else self._model).append((now, observed))
        if self.active or control:
            return False
        self._since_eval += 1
        if self._since_eval < EVALUATE_EVERY or len(self._control) < MIN_CONTROL:
            return False
        self._since_eval = 0
        since = self._control[0][0]
        total = 0.0
        count = 0
        for t, v in reversed(self._model):
            if t < since:
                break
            total += v
            count += 1
        if count < self.window:
            return False
        model_mean = total / count
        control_mean = sum(v for _, v in self._control) / len(self._control)
        self.last_comparison = (model_mean, control_mean, count)
        # Two evaluations in a row: one unlucky control sample must not flip the router.
        self._strikes = self._strikes + 1 if model_mean > (1.0 + self.margin) * control_mean else 0
        if self._strikes >= 2:
            self.active = True
            self.tripped_at = now
            self.tripped_version = model_version
            self.trips += 1
            self._strikes = 0
            self._model.clear()
            log.warning("lodestar guardrail: learned path worse than fallback, routing with fallback",
                        extra={"event": "guardrail_trip", "model_mean_ttft_s": round(model_mean, 4),
                               "control_mean_ttft_s": round(control_mean, 4), "model_samples": count})
            return True
        return False

    def maybe_recover(self, now: float, model_version: int) -> bool:
        if not self.active or self.tripped_at is None:
            return False
        waited = now - self.tripped_at
        if (waited >= self.cooldown_s and model_version > self.tripped_version) or waited >= 2 * self.cooldown_s:
            self.active = False
            self._model.clear()
            log.info("lodestar guardrail: learned path restored",
                     extra={"event": "guardrail_clear", "waited_s": round(waited, 3), "model_version": model_version})
            return True
        return False

    def snapshot(self) -> dict[str, object]:
        return {"active": self.active, "trips": self.trips, "tripped_at": self.tripped_at,
                "last_comparison": None if self.last_comparison is None else {
                    "model_mean_ttft_s": self.last_comparison[0], "control_mean_ttft_s": self.last_comparison[1],
                    "model_samples": self.last_comparison[2]},
                "control_samples": len(self._control)}
