"""Workloads: trace readers, synthetic generators and lazily synthesised prompt text.

``load_workload(name_or_path, ...)`` is the one entry point; ``workload_names()`` lists the names it knows.
"""

from __future__ import annotations

from lodestar_vllm.workloads.catalog import UnknownWorkloadError, workload_names
from lodestar_vllm.workloads.load import load_workload
from lodestar_vllm.workloads.types import WorkloadRequest

__all__ = ["UnknownWorkloadError", "WorkloadRequest", "load_workload", "workload_names"]
