"""Small builders for baseline-policy tests: candidates, requests, and a dispatch/finish driver."""

from __future__ import annotations

from collections.abc import Sequence

from lodestar_vllm.core.types import EngineMetrics, InstanceView, Outcome, OutcomeStatus, RequestInfo
from lodestar_vllm.policies.base import RoutingPolicy

URLS = [f"http://10.0.0.{i}:8000" for i in range(1, 9)]


def view(url: str, *, waiting: float = 0.0, kv: float = 0.0, healthy: bool = True, metrics: bool = True,
         block_size: int | None = 16, num_gpu_blocks: int | None = None) -> InstanceView:
    m = None
    if metrics:
        m = EngineMetrics(scraped_at=0.0, num_waiting=waiting, kv_cache_usage=kv, block_size=block_size,
                          num_gpu_blocks=num_gpu_blocks)
    return InstanceView(url=url, metrics=m, healthy=healthy)


def views(n: int = 4, **kwargs) -> list[InstanceView]:
    return [view(url, **kwargs) for url in URLS[:n]]


_counter = 0


def req(text: str = "", *, rid: str | None = None, now: float = 0.0, headers: dict[str, str] | None = None,
        session_id: str | None = None, prompt_tokens: int | None = None, model: str = "m") -> RequestInfo:
    global _counter
    _counter += 1
    return RequestInfo(request_id=rid or f"req-{_counter}", model=model, prompt_text=text, arrival_time=now,
                       prompt_tokens=prompt_tokens, session_id=session_id, headers=headers or {})


def occupy(policy: RoutingPolicy, url: str, n: int, candidates: Sequence[InstanceView], now: float = 0.0) -> None:
    """Put ``n`` requests in flight on ``url`` by routing with ``url`` as the only candidate."""
    only = [c for c in candidates if c.url == url]
    for _ in range(n):
        policy.route(req(now=now), only, now)


def finish(policy: RoutingPolicy, request: RequestInfo, url: str, now: float = 1.0) -> None:
    policy.on_outcome(Outcome(request.request_id, url, request.arrival_time, OutcomeStatus.OK,
                              first_token_at=now, finished_at=now))


def text_of(n_chars: int, seed: int = 0) -> str:
    from lodestar_vllm.tokenizer import text_for_tokens

    return text_for_tokens((n_chars + 3) // 4, seed)[:n_chars]
