"""Node labels and pod specs -> HardwareInfo (pure functions)."""

import pytest

from lodestar_vllm.core.config import LearnedConfig
from lodestar_vllm.core.features import normalise_gpu_class
from lodestar_vllm.core.types import HardwareInfo
from lodestar_vllm.integrations.kubernetes.descriptors import (
    hardware_info,
    node_gpu_facts,
    normalise_gpu_product,
    pod_facts,
)


@pytest.mark.parametrize(
    ("product", "memory_mib", "expected"),
    [
        ("NVIDIA-H100-80GB-HBM3", None, "H100-80GB"),
        ("A100-SXM4-40GB", None, "A100-40GB"),
        ("NVIDIA-A100-SXM4-80GB", None, "A100-80GB"),
        ("NVIDIA-A100-PCIE", 40960, "A100-40GB"),  # size only in the memory label
        ("NVIDIA-H100-NVL", 95830, "H100-94GB"),
        ("NVIDIA-A100-PCIE", None, "A100"),  # size unknown: family alone, not a guess
        ("Tesla-V100-SXM2-16GB", None, "V100"),
        ("NVIDIA-L4", None, "L4"),
        ("NVIDIA-A10G", None, "A10G"),
        ("NVIDIA-L40S", None, "L40S"),
        ("NVIDIA-L40", None, "L40"),
        ("NVIDIA-A30", None, "A30"),
        ("Tesla-T4", None, "T4"),
        ("NVIDIA-H200", None, "H200"),
        ("nvidia h100 80gb hbm3", None, "H100-80GB"),
        ("NVIDIA-RTX-A6000", None, "RTX-A6000"),  # unknown family keeps its name
        ("", None, None),
        (None, None, None),
    ],
)
def test_normalise_gpu_product(product: str | None, memory_mib: float | None, expected: str | None) -> None:
    assert normalise_gpu_product(product, memory_mib) == expected


def test_node_facts_read_memory_count_and_instance_type() -> None:
    facts = node_gpu_facts(
        {
            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
            "nvidia.com/gpu.memory": "81559",
            "nvidia.com/gpu.count": "8",
            "node.kubernetes.io/instance-type": "p5.48xlarge",
        }
    )
    assert facts.gpu_class == "H100-80GB"
    assert facts.gpu_memory_gb == pytest.approx(79.6, abs=0.1)
    assert facts.gpu_count == 8
    assert facts.instance_type == "p5.48xlarge"


def test_node_without_memory_label_uses_product_or_datasheet() -> None:
    assert node_gpu_facts({"nvidia.com/gpu.product": "A100-SXM4-40GB"}).gpu_memory_gb == 40.0
    assert node_gpu_facts({"nvidia.com/gpu.product": "NVIDIA-L4"}).gpu_memory_gb == 24.0
    assert node_gpu_facts({"nvidia.com/gpu.count": "garbage"}).gpu_count is None
    assert node_gpu_facts(None).gpu_class is None


def _pod(containers: list[dict], ip: str | None = "10.0.0.7", node: str | None = "gpu-node-1") -> dict:
    return {
        "metadata": {"name": "engine-0", "namespace": "llm"},
        "spec": {"nodeName": node, "containers": containers},
        "status": {"podIP": ip},
    }


def test_pod_tp_from_vllm_args_in_all_spellings() -> None:
    for args in (
        ["vllm", "serve", "m", "--tensor-parallel-size", "4"],
        ["vllm", "serve", "m", "--tensor-parallel-size=4"],
        ["vllm", "serve", "m", "-tp", "4"],
    ):
        facts = pod_facts(_pod([{"name": "vllm", "args": args}]))
        assert facts is not None and facts.tensor_parallel == 4
    shell = pod_facts(_pod([{"name": "vllm", "command": ["sh", "-c", "vllm serve m --tensor-parallel-size 2"]}]))
    assert shell is not None and shell.tensor_parallel == 2


def test_pod_gpu_limit_is_summed_and_guesses_tp() -> None:
    pod = _pod(
        [
            {"name": "vllm", "resources": {"limits": {"nvidia.com/gpu": "2", "cpu": "8"}}},
            {"name": "sidecar", "resources": {"limits": {"cpu": "1"}}},
        ]
    )
    facts = pod_facts(pod)
    assert facts is not None
    assert (facts.gpu_limit, facts.tensor_parallel, facts.pod_ip, facts.node_name) == (2, None, "10.0.0.7", "gpu-node-1")
    info = hardware_info(facts, node_gpu_facts({"nvidia.com/gpu.product": "NVIDIA-L4"}))
    assert info == HardwareInfo(gpu_class="L4", gpu_memory_gb=24.0, gpu_count=2, tensor_parallel=2)


def test_explicit_tp_wins_over_gpu_count() -> None:
    pod = _pod([{"name": "vllm", "args": ["-tp", "2"], "resources": {"limits": {"nvidia.com/gpu": 4}}}])
    facts = pod_facts(pod)
    assert facts is not None
    assert hardware_info(facts, None) == HardwareInfo(gpu_count=4, tensor_parallel=2)


def test_nothing_known_is_unknown_hardware() -> None:
    facts = pod_facts(_pod([{"name": "cpu-engine", "args": ["--tensor-parallel-size", "zero"]}]))
    assert facts is not None
    assert hardware_info(facts, None) is None
    assert hardware_info(facts, node_gpu_facts({})) is None
    assert pod_facts({"metadata": {}}) is None


@pytest.mark.parametrize(
    ("product", "family"),
    [("NVIDIA-H100-80GB-HBM3", "H100"), ("A100-SXM4-40GB", "A100"), ("NVIDIA-L40S", "L40S"), ("NVIDIA-L4", "L4"),
     ("NVIDIA-A10G", "A10G"), ("Tesla-V100-SXM2-16GB", "V100"), ("NVIDIA-H200", "H200")],
)
def test_discovered_classes_are_the_learner_feature_classes(product: str, family: str) -> None:
    # The learner folds "H100-80GB" into its known class "H100" (longest prefix); the names must line up.
    assert normalise_gpu_class(normalise_gpu_product(product), LearnedConfig().known_gpu_classes) == family
