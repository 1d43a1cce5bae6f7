"""The one policy interface shared by the simulator, the benchmark and the production-stack adapter.

A policy chooses an engine for a request from candidate views (``route``), and observes what happened
(``on_first_token``, ``on_outcome``), in the spirit of river's ``predict_one`` / ``learn_one``. ``route`` is
the dispatch: a policy may update its own in-flight accounting there. The caller passes ``now`` on its own
clock; a policy never reads a wall clock, so simulation is deterministic for a seed.

Contract for ``route``: ``candidates`` is non-empty; the returned ``Decision.url`` is one of the candidates'
urls; it never raises on odd input (a policy falls back to a safe choice and says why in ``Decision.reason``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from lodestar_vllm.core.types import Decision, InstanceView, Outcome, RequestInfo


class RoutingPolicy(ABC):
    name: ClassVar[str] = "abstract"

    @abstractmethod
    def route(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Decision: ...

    def on_first_token(self, request_id: str, url: str, now: float) -> None:  # noqa: B027 - optional hook
        """The first output token of a routed request arrived at the client side."""

    def on_outcome(self, outcome: Outcome) -> None:  # noqa: B027 - optional hook
        """A routed attempt ended (success, failure or abort). Called exactly once per routed attempt."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release background resources (trainer threads/processes)."""
