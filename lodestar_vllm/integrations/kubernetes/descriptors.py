"""Pod and node objects (plain API dicts) -> HardwareInfo. Pure functions, no I/O: the watcher calls them when an
object changes, never on the request path.

Sources, in order of trust: the node's GPU feature-discovery labels (``nvidia.com/gpu.product``,
``nvidia.com/gpu.memory`` in MiB, ``nvidia.com/gpu.count``), the pod's ``nvidia.com/gpu`` limits (GPUs the engine
owns) and vLLM's ``--tensor-parallel-size`` in the container command or args.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lodestar_vllm.core.types import HardwareInfo

PRODUCT_LABEL = "nvidia.com/gpu.product"
MEMORY_LABEL = "nvidia.com/gpu.memory"
COUNT_LABEL = "nvidia.com/gpu.count"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
GPU_RESOURCE = "nvidia.com/gpu"

# Families sold with several memory sizes keep the size in the class ("A100-40GB" and "A100-80GB" behave
# differently under KV-cache pressure); single-size families are named alone ("L4", "V100").
_SIZED_FAMILIES = ("A100", "A800", "H100", "H800")
# Longest first so that "L40S" is not read as "L40" or "L4", "A10G" not as "A10".
_FAMILIES = (
    "GB200", "B200", "B100", "H200", "H100", "H800", "H20", "A100", "A800", "L40S", "L40", "A10G", "A10",
    "A30", "A40", "A16", "A2", "L4", "T4", "V100", "P100", "P4",
)
# Datasheet memory (GB) for when neither the memory label nor the product name says.
_DEFAULT_MEMORY_GB = {
    "GB200": 192.0, "B200": 192.0, "B100": 192.0, "H200": 141.0, "H100": 80.0, "H800": 80.0, "H20": 96.0,
    "A100": 80.0, "A800": 80.0, "L40S": 48.0, "L40": 48.0, "A10G": 24.0, "A10": 24.0, "A30": 24.0, "A40": 48.0,
    "A16": 16.0, "A2": 16.0, "L4": 24.0, "T4": 16.0, "V100": 16.0, "P100": 16.0, "P4": 8.0,
}
_VENDOR_PREFIXES = ("NVIDIA", "TESLA", "GEFORCE", "QUADRO")
_SIZE_TOKEN = re.compile(r"^(\d+)GB?$")
_TP_FLAG = re.compile(r"^(?:--tensor-parallel-size|-tp)(?:=(\d+))?$")


def _tokens(product: str) -> list[str]:
    return [token for token in re.split(r"[-_\s]+", product.strip().upper()) if token]


def normalise_gpu_product(product: str | None, memory_mib: float | None = None) -> str | None:
    """``NVIDIA-H100-80GB-HBM3`` -> ``H100-80GB``, ``A100-SXM4-40GB`` -> ``A100-40GB``,
    ``Tesla-V100-SXM2-16GB`` -> ``V100``, ``NVIDIA-L4`` -> ``L4``. An unknown product keeps its name without
    the vendor prefix (``NVIDIA-RTX-A6000`` -> ``RTX-A6000``) rather than being dropped."""
    if not product or not product.strip():
        return None
    tokens = _tokens(product)
    family = next((token for token in tokens if token in _FAMILIES), None)
    if family is None:
        rest = [token for token in tokens if token not in _VENDOR_PREFIXES]
        return "-".join(rest) or None
    if family not in _SIZED_FAMILIES:
        return family
    size_gb = _size_from_tokens(tokens)
    if size_gb is None and memory_mib:
        size_gb = _round_marketing_gb(memory_mib)
    return f"{family}-{size_gb}GB" if size_gb is not None else family


def _size_from_tokens(tokens: Iterable[str]) -> int | None:
    for token in tokens:
        match = _SIZE_TOKEN.match(token)
        if match:
            return int(match.group(1))
    return None


def _round_marketing_gb(memory_mib: float) -> int:
    # GFD reports usable MiB (e.g. 81559 for an 80 GB card, 40960 for 40 GB): round to the sold size.
    sizes = (16, 24, 32, 40, 48, 80, 94, 96, 141, 192)
    gib = memory_mib / 1024.0
    return min(sizes, key=lambda size: abs(size - gib))


@dataclass(frozen=True, slots=True)
class NodeGpuFacts:
    gpu_class: str | None
    gpu_memory_gb: float | None
    gpu_count: int | None
    instance_type: str | None


@dataclass(frozen=True, slots=True)
class PodFacts:
    name: str
    namespace: str
    pod_ip: str | None
    node_name: str | None
    gpu_limit: int | None  # summed over containers; None when no container names the resource
    tensor_parallel: int | None  # from vLLM's command line when present
    terminated: bool = False  # Succeeded/Failed: its IP may already belong to another pod


def node_gpu_facts(labels: Mapping[str, str] | None) -> NodeGpuFacts:
    labels = labels or {}
    memory_mib = _to_float(labels.get(MEMORY_LABEL))
    gpu_class = normalise_gpu_product(labels.get(PRODUCT_LABEL), memory_mib)
    if memory_mib is not None:
        memory_gb: float | None = round(memory_mib / 1024.0, 1)
    else:
        memory_gb = _memory_from_class(gpu_class, labels.get(PRODUCT_LABEL))
    count = _to_float(labels.get(COUNT_LABEL))
    return NodeGpuFacts(
        gpu_class=gpu_class,
        gpu_memory_gb=memory_gb,
        gpu_count=int(count) if count is not None else None,
        instance_type=labels.get(INSTANCE_TYPE_LABEL),
    )


def _memory_from_class(gpu_class: str | None, product: str | None) -> float | None:
    if gpu_class is None:
        return None
    tokens = _tokens(product or "")
    size = _size_from_tokens(tokens)
    if size is not None:
        return float(size)
    family = gpu_class.split("-")[0]
    return _DEFAULT_MEMORY_GB.get(family)


def pod_facts(pod: Mapping[str, Any]) -> PodFacts | None:
    """The facts of one pod object (API JSON); None when it has no name."""
    metadata = pod.get("metadata") or {}
    name = metadata.get("name")
    if not name:
        return None
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    containers = spec.get("containers") or []
    limits = [_gpu_limit(container) for container in containers]
    named = [limit for limit in limits if limit is not None]
    tp = next((tp for tp in (_tensor_parallel(container) for container in containers) if tp is not None), None)
    return PodFacts(
        name=name,
        namespace=metadata.get("namespace") or "default",
        pod_ip=status.get("podIP") or None,
        node_name=spec.get("nodeName") or None,
        gpu_limit=sum(named) if named else None,
        tensor_parallel=tp,
        terminated=status.get("phase") in ("Succeeded", "Failed"),
    )


def _gpu_limit(container: Mapping[str, Any]) -> int | None:
    resources = container.get("resources") or {}
    for section in ("limits", "requests"):  # the device plugin requires limits; requests must equal them
        value = (resources.get(section) or {}).get(GPU_RESOURCE)
        number = _to_float(value)
        if number is not None:
            return int(number)
    return None


def _tensor_parallel(container: Mapping[str, Any]) -> int | None:
    words: list[str] = []
    for part in list(container.get("command") or []) + list(container.get("args") or []):
        # Shell-wrapped commands ("sh -c 'vllm serve ... -tp 2'") arrive as one string.
        words.extend(str(part).split())
    for index, word in enumerate(words):
        match = _TP_FLAG.match(word)
        if not match:
            continue
        value = match.group(1) if match.group(1) else (words[index + 1] if index + 1 < len(words) else None)
        number = _to_float(value)
        if number is not None and number >= 1:
            return int(number)
    return None


def _to_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def hardware_info(pod: PodFacts, node: NodeGpuFacts | None) -> HardwareInfo | None:
    """Combine pod and node facts; None when nothing at all is known (unknown hardware)."""
    tp = pod.tensor_parallel if pod.tensor_parallel is not None else (pod.gpu_limit or None)
    info = HardwareInfo(
        gpu_class=node.gpu_class if node else None,
        gpu_memory_gb=node.gpu_memory_gb if node else None,
        gpu_count=pod.gpu_limit,
        tensor_parallel=tp,
    )
    if info == HardwareInfo():
        return None
    return info
