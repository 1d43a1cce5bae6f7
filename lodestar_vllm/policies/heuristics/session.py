"""``session``: production-stack's SessionRouter.

Mirrors vllm-project/production-stack ``src/vllm_router/routers/routing_logic.py`` (``SessionRouter``,
``RoutingInterface.extract_session_id``), commit a6c01db0: the session key is read from the request headers
(``--session-key``; here ``x-user-id`` by default, case-insensitive as HTTP headers are) and, failing that, from
``RequestInfo.session_id`` (upstream reads the same key from the JSON body). A consistent-hash ring over the
candidate urls maps the session to an engine; requests without a session go to ``_qps_routing``.
"""

from __future__ import annotations

from collections.abc import Sequence

from lodestar_vllm.core.types import InstanceView, RequestInfo
from lodestar_vllm.policies.heuristics.hashring import HashRing
from lodestar_vllm.policies.heuristics.qps import ArrivalRates, qps_routing
from lodestar_vllm.policies.heuristics.tracked import Choice, TrackedPolicy


def session_id(request: RequestInfo, session_key: str) -> str | None:
    wanted = session_key.lower()
    for name, value in request.headers.items():
        if name.lower() == wanted:
            return value
    return request.session_id


class SessionPolicy(TrackedPolicy):
    name = "session"

    def __init__(
        self, seed: int = 0, session_key: str = "x-user-id", request_stats_window: float = 60.0, **kwargs: float
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        self.session_key = session_key
        self.ring = HashRing()
        self.rates = ArrivalRates(request_stats_window)

    def _choose(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Choice:
        self.ring.set_nodes(c.url for c in candidates)
        session = session_id(request, self.session_key)
        if session is None:
            url, reason = qps_routing(candidates, self.rates, now), "no session id: lowest qps"
        else:
            url = self.ring.get_node(session) or candidates[0].url
            reason = "session hash ring"
        self.rates.record(url, now)
        return Choice(url, reason)

    def _forget_urls(self, urls: set[str]) -> None:
        self.rates.forget(urls)
