"""The cluster file format shared by the emulator, the simulator and the benchmark.

```yaml
model: llama-3.1-8b
engine: {block_size: 16, max_num_batched_tokens: 2048, max_num_seqs: 256, gpu_memory_utilization: 0.92}
instances:
  - {gpu: A30, count: 4}
  - {gpu: V100, count: 4, tensor_parallel: 1}
```
Per-instance keys override ``engine`` keys for that group (e.g. ``max_num_batched_tokens: 8192`` on H100s).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """vLLM engine arguments that shape scheduling and KV capacity (names as ``vllm serve`` flags)."""

    block_size: int = 16
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 256
    gpu_memory_utilization: float = 0.92
    max_model_len: int = 131072
    enable_prefix_caching: bool = True
    # Overrides the capacity computed from memory (to mirror a real engine's --kv-cache-memory-bytes).
    num_gpu_blocks: int | None = None

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> EngineConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown engine option(s): {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    name: str  # unique, e.g. "a30-0"
    gpu: str
    model: str
    tensor_parallel: int = 1
    engine: EngineConfig = field(default_factory=EngineConfig)


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    model: str
    instances: tuple[InstanceSpec, ...]

    @classmethod
    def from_yaml(cls, path: str | Path) -> ClusterSpec:
        with open(path, encoding="utf-8") as fh:
            return cls.from_mapping(yaml.safe_load(fh))

    @classmethod
    def from_mapping(cls, data: Any) -> ClusterSpec:
        if not isinstance(data, dict) or "model" not in data or "instances" not in data:
            raise ValueError("cluster file needs 'model' and 'instances'")
        model = str(data["model"])
        base = dict(data.get("engine") or {})
        engine_keys = {f.name for f in fields(EngineConfig)}
        instances: list[InstanceSpec] = []
        counters: dict[str, int] = {}
        for group in data["instances"]:
            group = dict(group)
            gpu = str(group.pop("gpu"))
            count = int(group.pop("count", 1))
            tp = int(group.pop("tensor_parallel", 1))
            group_model = str(group.pop("model", model))
            overrides = {k: group.pop(k) for k in list(group) if k in engine_keys}
            if group:
                raise ValueError(f"unknown instance option(s): {', '.join(sorted(group))}")
            engine = EngineConfig.from_mapping({**base, **overrides})
            for _ in range(count):
                idx = counters.get(gpu, 0)
                counters[gpu] = idx + 1
                instances.append(InstanceSpec(f"{gpu.lower()}-{idx}", gpu, group_model, tp, engine))
        if not instances:
            raise ValueError("cluster has no instances")
        return cls(model, tuple(instances))
