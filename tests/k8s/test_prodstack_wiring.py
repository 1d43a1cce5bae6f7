"""Kubernetes awareness inside the production-stack runtime: hardware read from pods and nodes served by the
API stand-in reaches the candidate views the policy routes on, a shared model is elected with the router's own
(wrapped) learned policy, and a broken or slow Kubernetes set-up never stops the router from routing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from lodestar_vllm.core.types import HardwareInfo
from lodestar_vllm.integrations.kubernetes import awareness as awareness_mod
from lodestar_vllm.integrations.production_stack.runtime import (
    LodestarRuntime,
    clear_runtime,
    install_runtime,
)
from lodestar_vllm.integrations.production_stack.settings import LodestarSettings
from tests.k8s.conftest import ApiServer, wait_until
from tests.k8s.test_hardware_watcher import node, pod
from tests.prodstack.stub_policy import StubPolicy
from tests.prodstack.test_routing import Endpoint, FakeRequest

H100_ENGINE = "http://10.7.0.1:8000"
L4_ENGINE = "http://10.7.0.2:8000"
STATIC_ENGINE = "http://10.7.0.3:8000"  # no pod: only the operator's --lodestar-hardware knows it
UNKNOWN_ENGINE = "http://10.7.0.9:8000"  # neither: unknown hardware
ENGINES = [H100_ENGINE, L4_ENGINE, STATIC_ENGINE, UNKNOWN_ENGINE]


@pytest.fixture
def k8s_env(apiserver: ApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """What the Helm values give a router pod, with a kubeconfig pointing at the stand-in instead of the
    in-cluster service account."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "stand-in",
        "clusters": [{"name": "stand-in", "cluster": {"server": apiserver.url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "u"}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("LODESTAR_K8S_ENGINE_NAMESPACE", "llm")
    monkeypatch.setenv("LODESTAR_K8S_ENGINE_SELECTOR", "app=vllm-engine")
    monkeypatch.setenv("POD_NAME", "router-0")
    monkeypatch.setenv("POD_NAMESPACE", "router")
    yield
    clear_runtime()


async def _create_engines(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    await core.create_node(node("gpu-h", "NVIDIA-H100-80GB-HBM3"))
    await core.create_node(node("gpu-l", "NVIDIA-L4", memory_mib="23034"))
    await core.create_namespaced_pod("llm", pod("engine-h", "10.7.0.1", "gpu-h", gpus=2,
                                                args=["vllm", "serve", "m", "--tensor-parallel-size", "2"]))
    await core.create_namespaced_pod("llm", pod("engine-l", "10.7.0.2", "gpu-l"))
    # Not an engine (selector mismatch): must not lend its node's GPU to anyone.
    await core.create_namespaced_pod("llm", pod("other", "10.7.0.9", "gpu-h", labels={"app": "other"}))


def _route(runtime: LodestarRuntime) -> list[Any]:
    """One request through the runtime's request path; the views the policy was given."""
    runtime.route([Endpoint(u) for u in ENGINES], {}, FakeRequest({"model": "m", "prompt": "hi"}), None)
    _, views = runtime.policy.routes[-1]
    return views


async def test_discovered_hardware_reaches_the_policys_candidate_views(
    k8s_env: None, api: client.ApiClient, apiserver: ApiServer
) -> None:
    await _create_engines(api)
    static = {STATIC_ENGINE: HardwareInfo(gpu_class="A100-80GB"), L4_ENGINE: HardwareInfo(gpu_class="L40S")}
    runtime = install_runtime(LodestarRuntime(LodestarSettings(policy="stub", hardware=static), policy=StubPolicy()))
    await runtime.start()  # the router's lifespan
    try:
        assert runtime.k8s is not None and runtime.k8s_error is None
        await wait_until(lambda: runtime.hardware.get(H100_ENGINE) is not None
                         and runtime.hardware[H100_ENGINE].gpu_class is not None, what="the H100 engine's node")
        by_url = {v.url: v.hardware for v in _route(runtime)}
        assert by_url[H100_ENGINE] == HardwareInfo(gpu_class="H100-80GB", gpu_memory_gb=80.0, gpu_count=2,
                                                   tensor_parallel=2)
        assert by_url[L4_ENGINE] == HardwareInfo(gpu_class="L40S")  # the operator's static map wins
        assert by_url[STATIC_ENGINE] == HardwareInfo(gpu_class="A100-80GB")
        assert by_url[UNKNOWN_ENGINE] is None  # a pod outside the selector lends nothing
        assert runtime.status()["kubernetes"]["known_engine_pods"] == 2

        # A pod replaced on another node (new IP): the next request sees the new facts, with no restart.
        core = client.CoreV1Api(api)
        await core.delete_namespaced_pod("engine-h", "llm")
        await core.create_namespaced_pod("llm", pod("engine-h2", "10.7.0.1", "gpu-l"))
        await wait_until(lambda: (runtime.hardware.get(H100_ENGINE) or HardwareInfo()).gpu_class == "L4",
                         what="the replacement pod on the L4 node")
        assert {v.url: v.hardware for v in _route(runtime)}[H100_ENGINE] == HardwareInfo(
            gpu_class="L4", gpu_memory_gb=pytest.approx(23034 / 1024, abs=0.1), gpu_count=1, tensor_parallel=1)
    finally:
        await runtime.stop()
    assert runtime.k8s is None and runtime.status()["kubernetes"] is None
    # Closed: the views fall back to the static map only.
    assert {v.url: v.hardware for v in _route(runtime)}[H100_ENGINE] is None


async def test_patched_host_path_starts_sharing_with_the_wrapped_learned_policy(
    k8s_env: None, api: client.ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The patched host has no lifespan of ours: the first request's ensure_started starts the awareness.
    Sharing needs the learner's callables through the outlier-ejection wrapper around the learned policy."""
    await _create_engines(api)
    for name, value in {"SHARING": "true", "LEASE_DURATION": "2", "RENEW_DEADLINE": "1.5",
                        "RETRY_PERIOD": "1", "CANDIDATE_INTERVAL": "1", "PUBLISH_INTERVAL": "1"}.items():
        monkeypatch.setenv(f"LODESTAR_K8S_{name}", value)
    monkeypatch.setenv("LODESTAR_TRAINER_MODE", "off")  # no training needed here; keeps the box quiet
    runtime = install_runtime(LodestarRuntime(LodestarSettings(policy="learned")))
    assert type(runtime.policy).__name__ == "OutlierEjection"
    runtime.ensure_started()
    runtime.route([Endpoint(u) for u in ENGINES], {}, FakeRequest({"model": "m", "prompt": "hi"}), None)
    try:
        await wait_until(lambda: runtime.k8s is not None, what="the awareness started from the request path")
        await wait_until(lambda: (runtime.status()["kubernetes"].get("sharing") or {}).get("leader") is True,
                         what="the only replica to take the lease")
        await wait_until(lambda: (runtime.hardware.get(L4_ENGINE) or HardwareInfo()).gpu_class == "L4",
                         what="discovery on the patched-host path")
        status = runtime.status()["kubernetes"]
        assert status["sharing"]["candidates"] == 0  # an untrained learned policy offers nothing, raises nothing
        assert status["sharing"]["export_errors"] == 0
    finally:
        await runtime.stop()
    assert runtime.k8s is None


async def test_a_bad_kubernetes_setting_degrades_to_unknown_hardware(
    k8s_env: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LODESTAR_K8S_SHARING", "maybe")
    static = {STATIC_ENGINE: HardwareInfo(gpu_class="A100-80GB")}
    runtime = install_runtime(LodestarRuntime(LodestarSettings(policy="stub", hardware=static), policy=StubPolicy()))
    await runtime.start()  # returns: a router with wrong Kubernetes options still routes
    try:
        assert runtime.k8s is None
        error = runtime.status()["kubernetes"]["error"]
        assert "LODESTAR_K8S_SHARING" in error and "unknown" in error
        assert any("Kubernetes awareness did not start" in r.getMessage() for r in caplog.records)
        by_url = {v.url: v.hardware for v in _route(runtime)}
        assert by_url == {H100_ENGINE: None, L4_ENGINE: None, STATIC_ENGINE: HardwareInfo(gpu_class="A100-80GB"),
                          UNKNOWN_ENGINE: None}
    finally:
        await runtime.stop()


async def test_no_kubeconfig_and_a_hung_api_client_both_degrade(
    k8s_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    runtime = install_runtime(LodestarRuntime(LodestarSettings(policy="stub"), policy=StubPolicy()))
    await runtime.start()
    try:
        assert runtime.k8s is None and "did not start" in runtime.status()["kubernetes"]["error"]
        assert len(_route(runtime)) == len(ENGINES)
    finally:
        await runtime.stop()

    async def hung_client() -> client.ApiClient:
        await asyncio.Event().wait()  # an exec credential plugin that never answers, say
        raise AssertionError("unreachable")

    monkeypatch.setattr(awareness_mod, "default_api_client", hung_client)
    runtime = install_runtime(LodestarRuntime(LodestarSettings(policy="stub", kubernetes_start_timeout=0.2),
                                              policy=StubPolicy()))
    await asyncio.wait_for(runtime.start(), timeout=10)  # bounded by the setting, not by the hung call
    try:
        assert runtime.k8s is None and "timed out" in runtime.status()["kubernetes"]["error"]
        assert len(_route(runtime)) == len(ENGINES)
    finally:
        await runtime.stop()
