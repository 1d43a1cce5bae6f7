"""A small, deterministic policy for adapter tests: round-robin over sorted urls, recording every hook call."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from lodestar_vllm.core.types import Decision, DecisionPath, InstanceView, Outcome, RequestInfo
from lodestar_vllm.policies.base import RoutingPolicy


class StubPolicy(RoutingPolicy):
    name = "stub"

    def __init__(self, seed: int = 0, fail_route: bool = False) -> None:
        self.seed = seed
        self.fail_route = fail_route
        self.outstanding: dict[str, int] = {}
        self.routes: list[tuple[RequestInfo, list[InstanceView]]] = []
        self.first_tokens: list[tuple[str, str]] = []
        self.outcomes: list[Outcome] = []
        self.routed_ids: set[str] = set()

    def route(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Decision:
        if self.fail_route:
            raise RuntimeError("stub asked to fail")
        self.routes.append((request, list(candidates)))
        self.routed_ids.add(request.request_id)
        urls = sorted(c.url for c in candidates)
        url = urls[len(self.routes) % len(urls)]
        self.outstanding[url] = self.outstanding.get(url, 0) + 1
        return Decision(url=url, path=DecisionPath.HEURISTIC, reason="round-robin")

    def on_first_token(self, request_id: str, url: str, now: float) -> None:
        self.first_tokens.append((request_id, url))

    def on_outcome(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self.outstanding[outcome.url] -= 1

    def status(self) -> dict[str, object]:
        return {"outstanding": dict(self.outstanding), "outcomes": len(self.outcomes)}

    def explain(self, request_id: str) -> dict[str, object]:
        return {"stub": request_id in self.routed_ids}

    def export_checkpoint(self) -> bytes:
        return json.dumps({"outcomes": len(self.outcomes)}).encode()

    def load_checkpoint(self, path: str) -> bool:
        self.restored = json.loads(Path(path).read_bytes())
        return True
