"""Profiles: names and aliases, KV bytes, capacity from memory, defaults, refusals."""

from __future__ import annotations

import pytest

from lodestar_vllm.sim.cluster_spec import EngineConfig
from lodestar_vllm.sim.engine import EngineCore
from lodestar_vllm.sim.kv_cache import num_gpu_blocks
from lodestar_vllm.sim.profiles import GIB, default_engine_config, get_profile, known_gpus, resolve_model

REQUIRED_GPUS = ["H100-80GB", "A100-80GB", "A100-40GB", "A30", "L40S", "A10G", "L4", "V100", "T4"]


@pytest.mark.parametrize("gpu", REQUIRED_GPUS)
@pytest.mark.parametrize("model", ["qwen2.5-1.5b", "qwen3-4b"])
def test_small_models_run_on_every_gpu(gpu: str, model: str) -> None:
    engine = EngineCore(get_profile(gpu, model), default_engine_config(gpu))
    assert engine.num_gpu_blocks > 1000


def test_aliases_resolve() -> None:
    assert get_profile("H100", "llama-3-8b").name == "H100-80GB/llama-3.1-8b"
    assert get_profile("nvidia-a100", "meta-llama/Llama-3.1-8B-Instruct").gpu.name == "A100-80GB"
    assert get_profile("cpu", "tiny").name == "cpu/tiny"


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known GPUs: .*H100-80GB"):
        get_profile("B200-9000", "llama-3.1-8b")
    with pytest.raises(ValueError, match="known models: .*qwen3-4b"):
        get_profile("H100", "gpt-5")
    with pytest.raises(ValueError, match="known GPUs"):
        default_engine_config("TPU")


def test_kv_bytes_per_token() -> None:
    assert resolve_model("llama-3.1-8b").kv_bytes_per_token() == 128 * 1024
    assert get_profile("H100", "llama-3.1-70b", 4).kv_bytes_per_token == 320 * 1024 // 4
    # TP beyond the KV heads replicates them (8 KV heads, TP 8 -> 1 head per GPU, not fewer)
    assert get_profile("H100", "llama-3.1-70b", 8).kv_bytes_per_token == 320 * 1024 // 8
    assert get_profile("cpu", "tiny").kv_bytes_per_token == 2048  # 16 MiB = 8192 tokens (real-vllm-cpu.md)


def test_cpu_kv_cache_is_a_fixed_space() -> None:
    tiny = get_profile("cpu", "tiny")
    assert num_gpu_blocks(tiny, default_engine_config("cpu")) == 4 * GIB // (2048 * 128)
    assert num_gpu_blocks(tiny, default_engine_config("cpu", gpu_memory_utilization=0.5)) == 16384
    assert num_gpu_blocks(tiny, default_engine_config("cpu", num_gpu_blocks=64)) == 64


def test_capacity_is_memory_minus_weights_and_reserve_over_block_bytes() -> None:
    profile = get_profile("A100-80GB", "llama-3.1-8b")
    config = EngineConfig(gpu_memory_utilization=0.9, max_num_batched_tokens=2048)
    usable = 80 * GIB * 0.9
    reserve = profile.reserve_bytes(2048, 256)
    assert 1.0 * GIB < reserve < 3.0 * GIB
    expected = int((usable - profile.model.weight_bytes - reserve) // (128 * 1024 * 16))
    assert num_gpu_blocks(profile, config) == expected
    # More memory utilisation, more blocks; the override wins.
    assert num_gpu_blocks(profile, EngineConfig(gpu_memory_utilization=0.95)) > expected
    assert num_gpu_blocks(profile, EngineConfig(num_gpu_blocks=123)) == 123
    # Tensor parallelism shards weights and KV heads: far more tokens per GPU for a 70B model at TP 8.
    tp4 = num_gpu_blocks(get_profile("H100", "llama-3.1-70b", 4), EngineConfig())
    tp8 = num_gpu_blocks(get_profile("H100", "llama-3.1-70b", 8), EngineConfig())
    assert tp8 > 2 * tp4


def test_models_that_do_not_fit_are_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        get_profile("A100-80GB", "llama-3.1-70b", 1)
    with pytest.raises(ValueError, match="does not fit"):
        get_profile("T4", "llama-3.1-8b")
    with pytest.raises(ValueError, match="not divisible"):
        get_profile("H100", "llama-3.1-70b", 3)
    with pytest.raises(ValueError, match=">= 1"):
        get_profile("H100", "llama-3.1-8b", 0)
    profile = get_profile("A100-80GB", "llama-3.1-70b", 2)  # weights fit, KV does not at 0.5
    with pytest.raises(ValueError, match="no memory left for the KV cache"):
        EngineCore(profile, EngineConfig(gpu_memory_utilization=0.5))


def test_defaults_per_gpu() -> None:
    h100 = default_engine_config("H100")
    assert (h100.max_num_batched_tokens, h100.max_num_seqs) == (8192, 1024)
    for gpu in ("A100", "L4", "A10G", "L40S"):
        cfg = default_engine_config(gpu)
        assert (cfg.max_num_batched_tokens, cfg.max_num_seqs) == (2048, 256)
    assert default_engine_config("cpu").block_size == 128
    assert default_engine_config("L4", max_num_seqs=64).max_num_seqs == 64
    assert set(REQUIRED_GPUS) <= set(known_gpus())


def test_step_time_grows_with_tokens_and_context() -> None:
    model = EngineCore(get_profile("A100", "llama-3.1-8b"), EngineConfig()).step_time
    base = model.duration(1, 1, 1, 100)
    assert model.duration(1, 1, 1, 100_000) > base  # KV read
    assert model.duration(4096, 1, 4096 * 4097 // 2, 0) > model.duration(2048, 1, 2048 * 2049 // 2, 0) > base
    # Below the weight floor, a few more decode tokens cost almost nothing (memory-bound).
    assert model.duration(8, 8, 8, 800) < 1.1 * model.duration(1, 1, 1, 100)
