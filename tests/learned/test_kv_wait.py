"""The analytic estimate counts KV space: an engine whose cache is full of decoding requests has no prefill
queued, yet a long prompt must wait there until blocks free (Mooncake-like 12k-token prompts on small GPUs)."""

from __future__ import annotations

import numpy as np

from lodestar_vllm.core.features import kv_wait_s
from lodestar_vllm.core.types import EngineMetrics, InstanceView, RequestInfo
from lodestar_vllm.policies.registry import create_policy
from lodestar_vllm.tokenizer import text_for_tokens

CAPACITY_BLOCKS, BLOCK = 4096, 16  # 65,536 tokens of KV


def _request(rid: str, tokens: int, seed: int, max_tokens: int = 500) -> RequestInfo:
    return RequestInfo(request_id=rid, model="m", prompt_text=text_for_tokens(tokens, seed=seed), arrival_time=0.0,
                       prompt_tokens=tokens, max_tokens=max_tokens)


def _views(kv_a: float, kv_b: float, blocks: int | None = CAPACITY_BLOCKS) -> list[InstanceView]:
    def view(url: str, kv: float) -> InstanceView:
        return InstanceView(url, EngineMetrics(scraped_at=0.0, num_running=3, kv_cache_usage=kv,
                                               num_gpu_blocks=blocks, block_size=BLOCK if blocks else None))
    return [view("http://a", kv_a), view("http://b", kv_b)]


def _load(policy, blocks: int | None) -> None:
    # a: three long requests with long answers, all past their first token (decoding, holding KV, no prefill
    # queued); b: one 6k-token request still waiting for its prefill.
    for i in range(3):
        policy.route(_request(f"a{i}", 20_000, seed=i, max_tokens=2_000), [_views(0.1, 0.1, blocks)[0]], 0.0)
        policy.on_first_token(f"a{i}", "http://a", 0.5)
    policy.route(_request("b0", 6_000, seed=10), [_views(0.1, 0.1, blocks)[1]], 0.0)


def test_full_kv_of_decoding_requests_is_not_free() -> None:
    policy = create_policy("learned", seed=0)
    _load(policy, CAPACITY_BLOCKS)
    decision = policy.route(_request("new", 12_000, seed=20), _views(0.95, 0.1), 1.0)
    assert decision.url == "http://b"
    explained = {c["url"]: c for c in policy.explain("new")["candidates"]}
    assert explained["http://a"]["analytic_ttft_s"] > explained["http://b"]["analytic_ttft_s"]


def test_without_reported_capacity_the_estimate_ignores_kv() -> None:
    # Same load, but the engines do not report their cache size: only queued prefill counts, so a looks free.
    policy = create_policy("learned", seed=0)
    _load(policy, None)
    decision = policy.route(_request("new", 12_000, seed=20), _views(0.95, 0.1, None), 1.0)
    assert decision.url == "http://a"


def test_kv_wait_grows_with_the_shortfall_and_is_zero_when_the_request_fits() -> None:
    cap = np.full(3, 10_000.0)
    wait = kv_wait_s(np.array([0.5, 0.9, 1.0]), cap, np.full(3, 2_000.0), np.full(3, 4.0), np.full(3, 400.0),
                     np.full(3, 0.02))
    assert wait[0] == 0.0  # 5k used + 2k new fits in 10k
    assert 0.0 < wait[1] < wait[2]
    # 1.0 full + 2k new: a fifth of the cache must free; requests hold blocks for ~100 decode steps of 20 ms
    assert np.isclose(wait[2], 0.2 * 100 * 0.02)
    assert kv_wait_s(np.array([1.0]), np.array([0.0]), np.array([5e4]), np.ones(1), np.ones(1), np.ones(1))[0] == 0.0
