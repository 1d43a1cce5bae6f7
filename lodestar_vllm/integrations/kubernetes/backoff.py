"""Capped exponential backoff with jitter for the background loops that talk to the API server."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial_s: float = 0.5
    maximum_s: float = 30.0
    factor: float = 2.0
    # Jitter spreads the retries of many router replicas after an API-server restart.
    jitter: float = 0.2
    seed: int | None = None
    _attempt: int = field(default=0, init=False)
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.maximum_s < self.initial_s or self.factor < 1:
            raise ValueError(f"invalid backoff settings: {self!r}")
        self._rng = random.Random(self.seed)

    def next_delay(self) -> float:
        base = min(self.maximum_s, self.initial_s * self.factor**self._attempt)
        self._attempt += 1
        return base * (1.0 + self.jitter * (2.0 * self._rng.random() - 1.0))

    def reset(self) -> None:
        self._attempt = 0
