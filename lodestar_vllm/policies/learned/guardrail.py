"""The guardrail: if requests routed by the model do worse than the fallback's, route with the fallback until
a newer model has had time to recover.

The comparison is a randomised control arm: a small fraction of requests (``control_fraction``) is routed by
the fallback even when the model is trusted. Both arms share the same fleet and load at the same time, so
their observed TTFTs compare fairly (estimates of what the fallback "would have" got are biased: the pick
that minimises an estimate is the one whose estimate is most optimistic). The guardrail trips when the model
arm's mean TTFT over its window exceeds the control arm's by more than ``margin``; it clears after
``cooldown_s`` once a newer model version has been swapped in (or after twice the cooldown in any case).
"""

from __future__ import annotations

import logging
from collections import deque

log = logging.getLogger("lodestar_vllm.guardrail")

MIN_CONTROL = 30


class Guardrail:
    def __init__(self, window: int, margin: float, cooldown_s: float) -> None:
        self.window = window
        self.margin = margin
        self.cooldown_s = cooldown_s
        self._model: deque[float] = deque(maxlen=window)
        self._control: deque[float] = deque(maxlen=max(MIN_CONTROL, window // 2))
        self.active = False
        self.tripped_at: float | None = None
        self.tripped_version = 0
        self.trips = 0

    def observe(self, observed: float, control: bool, now: float, model_version: int) -> bool:
        """Record one outcome of the model arm or the control arm; True when this outcome tripped."""
        if not observed > 0:
            return False
        (self._control if control else self._model).append(observed)
        if self.active or control or len(self._model) < self.window or len(self._control) < MIN_CONTROL:
            return False
        model_mean = sum(self._model) / len(self._model)
        control_mean = sum(self._control) / len(self._control)
        if model_mean > (1.0 + self.margin) * control_mean:
            self.active = True
            self.tripped_at = now
            self.tripped_version = model_version
            self.trips += 1
            self._model.clear()
            log.warning("lodestar guardrail: learned path worse than fallback, routing with fallback",
                        extra={"event": "guardrail_trip", "model_mean_ttft_s": round(model_mean, 4),
                               "control_mean_ttft_s": round(control_mean, 4), "window": self.window})
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

    def snapshot(self) -> dict[str, float | int | bool | None]:
        return {"active": self.active, "trips": self.trips, "tripped_at": self.tripped_at,
                "model_mean_ttft_s": sum(self._model) / len(self._model) if self._model else None,
                "control_mean_ttft_s": sum(self._control) / len(self._control) if self._control else None,
                "control_samples": len(self._control)}
