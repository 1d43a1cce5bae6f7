"""The hardware watcher against a real HTTP Kubernetes API stand-in: objects appear, change and disappear; the
API fails and restarts; the watcher follows and the request-path lookup never blocks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client

from lodestar_vllm.core.types import HardwareInfo
from lodestar_vllm.integrations.kubernetes.backoff import Backoff
from lodestar_vllm.integrations.kubernetes.hardware import HardwareWatcher
from tests.k8s.conftest import ApiServer, wait_until

NS = "llm"
SELECTOR = "app=vllm-engine"


def node(name: str, product: str | None, memory_mib: str | None = None) -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name}
    if product:
        labels["nvidia.com/gpu.product"] = product
        labels["nvidia.com/gpu.count"] = "8"
    if memory_mib:
        labels["nvidia.com/gpu.memory"] = memory_mib
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def pod(name: str, ip: str, node_name: str, gpus: int = 1, args: list[str] | None = None,
        labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {"app": "vllm-engine"}},
        "spec": {
            "nodeName": node_name,
            "containers": [
                {"name": "vllm", "image": "vllm/vllm-openai", "args": args or ["vllm", "serve", "m"],
                 "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}
            ],
        },
        "status": {"podIP": ip, "phase": "Running"},
    }


def fast_backoff() -> Backoff:
    return Backoff(initial_s=0.05, maximum_s=0.2, seed=1)


@pytest.fixture
async def watcher(apiserver: ApiServer) -> AsyncIterator[HardwareWatcher]:
    async with apiserver.api_client() as api_client:
        hardware = HardwareWatcher(
            api_client, namespace=NS, pod_label_selector=SELECTOR, request_timeout_s=2.0, backoff=fast_backoff
        )
        await hardware.start()
        try:
            yield hardware
        finally:
            await hardware.close()


async def test_pods_and_nodes_appear_change_and_disappear(
    apiserver: ApiServer, api: client.ApiClient, watcher: HardwareWatcher
) -> None:
    core = client.CoreV1Api(api)
    assert await watcher.wait_synced(timeout_s=10)
    url = "http://10.1.0.5:8000"
    assert watcher.descriptor_for(url) is None  # never seen: unknown hardware

    await core.create_node(node("gpu-a", "NVIDIA-H100-80GB-HBM3", "81559"))
    await core.create_namespaced_pod(NS, pod("engine-a", "10.1.0.5", "gpu-a", gpus=2))
    await wait_until(lambda: (watcher.descriptor_for(url) or HardwareInfo()).gpu_class == "H100-80GB",
                     what="the pod on the H100 node")
    assert watcher.descriptor_for(url) == HardwareInfo("H100-80GB", 79.6, 2, 2)
    # production-stack's EndpointInfo carries the pod name: that lookup agrees.
    assert watcher.descriptor_for("http://engine-a.svc:8000", pod_name="engine-a", namespace=NS) == \
        watcher.descriptor_for(url)

    # The node is relabelled (e.g. GPU feature discovery ran late): every pod on it follows.
    await core.patch_node("gpu-a", {"metadata": {"labels": {"nvidia.com/gpu.product": "NVIDIA-L40S",
                                                            "nvidia.com/gpu.memory": "46068"}}})
    await wait_until(lambda: (watcher.descriptor_for(url) or HardwareInfo()).gpu_class == "L40S",
                     what="the relabelled node")

    # The pod moves to a new IP (rescheduled under the same name): the old IP no longer resolves.
    await core.patch_namespaced_pod("engine-a", NS, {"status": {"podIP": "10.1.0.9"}})
    await wait_until(lambda: watcher.descriptor_for("http://10.1.0.9:8000") is not None, what="the new pod IP")
    assert watcher.descriptor_for(url) is None

    # A finished pod gives up its IP, which the cluster may hand to a new engine on another node.
    await core.create_node(node("gpu-b", "NVIDIA-L4"))
    await core.patch_namespaced_pod("engine-a", NS, {"status": {"phase": "Failed"}})
    await wait_until(lambda: watcher.descriptor_for("http://10.1.0.9:8000") is None, what="the failed pod's IP")
    await core.create_namespaced_pod(NS, pod("engine-new", "10.1.0.9", "gpu-b"))
    await wait_until(lambda: (watcher.descriptor_for("http://10.1.0.9:8000") or HardwareInfo()).gpu_class == "L4",
                     what="the IP to belong to the new engine")
    await core.patch_namespaced_pod("engine-a", NS, {"metadata": {"annotations": {"late": "update"}}})
    await core.delete_namespaced_pod("engine-new", NS)

    # A pod without our label is not an engine of ours.
    await core.create_namespaced_pod(NS, pod("other", "10.1.0.6", "gpu-a", labels={"app": "web"}))
    await core.delete_namespaced_pod("engine-a", NS)
    await wait_until(lambda: watcher.known_pods == 0, what="the pod deletions")
    assert watcher.descriptor_for("http://10.1.0.9:8000") is None
    assert watcher.descriptor_for("http://10.1.0.6:8000") is None

    # A node that disappears takes its GPU facts with it; the pod-level facts remain.
    await core.create_namespaced_pod(NS, pod("engine-b", "10.1.0.7", "gpu-a", args=["-tp", "4"], gpus=4))
    await wait_until(lambda: watcher.descriptor_for("http://10.1.0.7:8000") is not None, what="engine-b")
    await core.delete_node("gpu-a")
    await wait_until(lambda: (watcher.descriptor_for("http://10.1.0.7:8000") or HardwareInfo()).gpu_class is None,
                     what="the node deletion")
    assert watcher.descriptor_for("http://10.1.0.7:8000") == HardwareInfo(None, None, 4, 4)


async def test_api_errors_are_survived_with_backoff(apiserver: ApiServer, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    await core.create_node(node("gpu-b", "NVIDIA-L4"))
    await core.create_namespaced_pod(NS, pod("engine-b", "10.2.0.1", "gpu-b"))
    # The first five list calls answer 500: the watcher backs off and retries, it does not die.
    apiserver.emulator.inject_errors(5, status=500, predicate=lambda r: r.method == "GET")
    async with apiserver.api_client() as api_client:
        hardware = HardwareWatcher(api_client, namespace=NS, pod_label_selector=SELECTOR, backoff=fast_backoff)
        await hardware.start()
        try:
            assert await hardware.wait_synced(timeout_s=10)
            await wait_until(lambda: hardware.descriptor_for("http://10.2.0.1:8000") is not None, what="recovery")
            assert hardware.descriptor_for("http://10.2.0.1:8000") == HardwareInfo("L4", 24.0, 1, 1)
            assert hardware.pod_stats.errors + hardware.node_stats.errors == 5
            assert apiserver.emulator.failed_requests == 5
        finally:
            await hardware.close()


async def test_api_server_restart_and_watch_expiry_are_followed(apiserver: ApiServer) -> None:
    async with apiserver.api_client() as api_client:
        core = client.CoreV1Api(api_client)
        await core.create_node(node("gpu-c", "A100-SXM4-40GB"))
        hardware = HardwareWatcher(api_client, namespace=NS, pod_label_selector=SELECTOR, watch_timeout_s=1.0,
                                   request_timeout_s=1.0, backoff=fast_backoff)
        await hardware.start()
        try:
            assert await hardware.wait_synced(timeout_s=10)
            # Watches end after about a second (client-side bound): the watcher re-lists and keeps its state.
            await wait_until(lambda: hardware.node_stats.watch_restarts >= 1, timeout_s=10, what="a watch expiry")

            await apiserver.restart(downtime_s=0.5)  # every open watch drops; requests fail while it is down
            await core.create_namespaced_pod(NS, pod("engine-c", "10.3.0.1", "gpu-c"))
            await wait_until(lambda: hardware.descriptor_for("http://10.3.0.1:8000") is not None, timeout_s=15,
                             what="the pod created after the restart")
            assert hardware.descriptor_for("http://10.3.0.1:8000") == HardwareInfo("A100-40GB", 40.0, 1, 1)
        finally:
            await hardware.close()


async def test_close_is_prompt_and_idempotent(apiserver: ApiServer) -> None:
    async with apiserver.api_client() as api_client:
        hardware = HardwareWatcher(api_client, namespace=None, backoff=fast_backoff)
        await hardware.start()
        assert await hardware.wait_synced(timeout_s=10)
        await hardware.close()
        await hardware.close()
    with pytest.raises(ValueError):
        HardwareWatcher(client.ApiClient(), watch_timeout_s=0)


async def test_410_gone_relists_at_once_without_counting_an_error(apiserver: ApiServer, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    await core.create_node(node("gpu-d", "NVIDIA-L4"))
    await core.create_namespaced_pod(NS, pod("engine-d", "10.4.0.1", "gpu-d"))
    # Pod watches are told their resourceVersion is too old (what an API server says after compaction), three
    # times in a row: re-list at once, then with backoff, and never count it as an error.
    apiserver.emulator.inject_errors(
        3, status=410, predicate=lambda r: r.query.get("watch") in ("True", "true") and "/pods" in r.path
    )
    async with apiserver.api_client() as api_client:
        hardware = HardwareWatcher(api_client, namespace=NS, pod_label_selector=SELECTOR, backoff=fast_backoff)
        await hardware.start()
        try:
            await wait_until(lambda: apiserver.emulator.failed_requests == 3, what="the 410s")
            await wait_until(lambda: hardware.pod_stats.lists >= 4, what="a re-list after each 410")
            assert hardware.pod_stats.errors == 0 and hardware.pod_stats.watch_restarts >= 3
            await core.patch_namespaced_pod("engine-d", NS, {"status": {"podIP": "10.4.0.2"}})
            await wait_until(lambda: hardware.descriptor_for("http://10.4.0.2:8000") is not None,
                             what="changes after the 410 to be followed")
        finally:
            await hardware.close()
