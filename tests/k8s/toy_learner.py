"""A stand-in learner behind the same callables as LearnedPolicy: its "weights" are the set of outcome ids it
has trained on, so a test can see exactly whose outcomes reached which model.

Like the learned policy, an import replaces the weights, and the next fit trains on the replay window again
(which survives the import); ``observe`` fits at once, and tests with replicas also fit in the background.
"""

from __future__ import annotations

import json
from collections import deque


class ToyLearner:
    def __init__(self, window: int = 50, refuse: bool = False) -> None:
        self.trained: set[str] = set()
        self.window: deque[str] = deque(maxlen=window)
        self.refuse = refuse
        self.imports = 0

    def observe(self, outcome_id: str) -> None:
        self.window.append(outcome_id)
        self.fit()

    def fit(self) -> None:
        self.trained |= set(self.window)

    def export(self) -> bytes:
        return json.dumps(sorted(self.trained)).encode() if self.trained else b""

    def import_(self, payload: bytes) -> bool:
        if self.refuse:
            return False
        self.trained = set(json.loads(payload))
        self.imports += 1
        return True

    def validation_loss(self) -> float:
        return 1.0 / (1.0 + len(self.trained))

    def evaluate(self, payload: bytes) -> float:
        return 1.0 / (1.0 + len(json.loads(payload)))
