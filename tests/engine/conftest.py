"""Helpers for engine-model tests: small engines with a known block count."""

from __future__ import annotations

import pytest

from lodestar_vllm.sim.cluster_spec import EngineConfig
from lodestar_vllm.sim.engine import EngineCore, EngineRequest
from lodestar_vllm.sim.profiles import get_profile
from lodestar_vllm.tokenizer import text_block_hashes, text_for_tokens


def make_engine(num_gpu_blocks: int | None = 1000, block_size: int = 16, budget: int = 2048,
                max_seqs: int = 256, **kw: object) -> EngineCore:
    config = EngineConfig(block_size=block_size, max_num_batched_tokens=budget, max_num_seqs=max_seqs,
                          num_gpu_blocks=num_gpu_blocks, **kw)
    return EngineCore(get_profile("A100-80GB", "llama-3.1-8b"), config)


def request(rid: str, text: str, max_tokens: int = 4, block_size: int = 16, at: float = 0.0) -> EngineRequest:
    prompt_len = len(text) // 4
    return EngineRequest(rid, prompt_len, max_tokens, text_block_hashes(text, block_size), at)


def run_to_end(engine: EngineCore, now: float = 0.0, max_steps: int = 100_000) -> float:
    steps = 0
    while engine.has_unfinished():
        now += engine.step(now).duration
        steps += 1
        assert steps < max_steps, "engine did not drain"
    return now


@pytest.fixture
def words():
    return text_for_tokens
