"""The router-process bundle: options from the environment, hardware + sharing started together, the
url -> HardwareInfo mapping the production-stack adapter consumes."""

from __future__ import annotations

from collections import ChainMap
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client
from prometheus_client import CollectorRegistry

from lodestar_vllm.core.types import HardwareInfo
from lodestar_vllm.integrations.kubernetes.awareness import (
    KubernetesAwareness,
    KubernetesOptions,
    LearnerCallables,
    policy_callables,
)
from lodestar_vllm.integrations.kubernetes.backoff import Backoff
from lodestar_vllm.integrations.kubernetes.model_board import ConfigMapModelBoard
from lodestar_vllm.integrations.kubernetes.sharing import ModelRecord, SharingCore
from lodestar_vllm.policies.learned.policy import LearnedPolicy
from tests.k8s.checkpoints import learned_checkpoint
from tests.k8s.conftest import ApiServer, wait_until
from tests.k8s.test_hardware_watcher import node, pod
from tests.k8s.toy_learner import ToyLearner


def test_options_from_env_and_clear_errors() -> None:
    env = {
        "LODESTAR_K8S_ENGINE_NAMESPACE": "llm",
        "LODESTAR_K8S_ENGINE_SELECTOR": "app=vllm-engine",
        "LODESTAR_K8S_SHARING": "true",
        "LODESTAR_K8S_SHARED_VOLUME": "/shared",
        "LODESTAR_K8S_PUBLISH_INTERVAL": "60",
        "POD_NAME": "router-7c9f",
        "POD_NAMESPACE": "router",
        "POD_UID": "uid-1",
    }
    options = KubernetesOptions.from_env(env)
    assert (options.engine_namespace, options.engine_selector, options.sharing) == ("llm", "app=vllm-engine", True)
    assert (options.replica_id, options.router_namespace, options.pod_uid) == ("router-7c9f", "router", "uid-1")
    assert options.publish_interval_s == 60.0 and options.shared_volume == "/shared"
    assert KubernetesOptions.from_env({}).sharing is False
    for bad in ({"LODESTAR_K8S_SHARING": "maybe"}, {"LODESTAR_K8S_PUBLISH_INTERVAL": "soon"},
                {"LODESTAR_K8S_CANDIDATE_INTERVAL": "-1"}, {"LODESTAR_K8S_LEASE_DURATION": "2.5"}):
        with pytest.raises(ValueError, match="LODESTAR_K8S_"):
            KubernetesOptions.from_env(bad)


def test_policy_callables_read_a_learned_policy_by_duck_typing() -> None:
    class Model:
        holdout_loss = 0.25

    class Policy:
        model: Model | None = None

        def export_checkpoint(self) -> bytes:
            return b"weights"

        def import_checkpoint(self, blob: bytes) -> bool:
            return blob == b"weights"

    policy = Policy()
    callables = policy_callables(policy)
    assert callables.export() == b"" and callables.validation_loss() is None  # type: ignore[misc]
    policy.model = Model()
    assert callables.export() == b"weights" and callables.validation_loss() == 0.25  # type: ignore[misc]
    assert callables.import_(b"weights") and not callables.import_(b"other")


async def test_awareness_runs_hardware_and_sharing_together(apiserver: ApiServer) -> None:
    learner = ToyLearner()
    learner.observe("o-1")
    options = KubernetesOptions(engine_namespace="llm", engine_selector="app=vllm-engine", sharing=True,
                                router_namespace="router", replica_id="router-0", candidate_interval_s=0.2,
                                publish_interval_s=0.2, lease_duration_s=2, renew_deadline_s=1.5,
                                retry_period_s=1.0)
    async with apiserver.api_client() as api_client:
        core = client.CoreV1Api(api_client)
        await core.create_node(node("gpu-z", "NVIDIA-H100-80GB-HBM3"))
        await core.create_namespaced_pod("llm", pod("engine-z", "10.9.0.1", "gpu-z"))
        registry = CollectorRegistry()
        awareness = KubernetesAwareness(
            options, api_client, LearnerCallables(learner.export, learner.import_, learner.validation_loss),
            watcher_kwargs={"backoff": lambda: Backoff(0.05, 0.2)},
            replica_kwargs={"tick_s": 0.1, "backoff": lambda: Backoff(0.05, 0.2)},
            registry=registry,
        )
        await awareness.start()
        try:
            lookup = ChainMap({"http://10.9.0.2:8000": HardwareInfo(gpu_class="L4")}, awareness.hardware_by_url())
            # Pods and nodes arrive on separate watches: pod-level facts may show before the node's.
            await wait_until(lambda: (lookup.get("http://10.9.0.1:8000") or HardwareInfo()).gpu_class == "H100-80GB",
                             what="the engine pod on its H100 node")
            assert lookup.get("http://10.9.0.2:8000") == HardwareInfo(gpu_class="L4")
            assert lookup.get("http://10.9.0.3:8000") is None
            assert list(awareness.hardware_by_url()) == ["10.9.0.1"]
            await wait_until(lambda: (awareness.status().get("sharing") or {}).get("publishes", 0) >= 1,
                             timeout_s=10, what="the single replica to lead and publish")
            status = awareness.status()
            assert status["known_engine_pods"] == 1 and status["sharing"]["leader"] is True
            # The same counters on the host's /metrics, read at scrape time.
            assert registry.get_sample_value("lodestar_k8s_known_engine_pods") == 1
            assert registry.get_sample_value("lodestar_k8s_sharing_leader") == 1
            assert registry.get_sample_value("lodestar_k8s_sharing_events_total", {"event": "publishes"}) >= 1
            assert registry.get_sample_value("lodestar_k8s_watch_errors_total", {"kind": "pod"}) == 0
        finally:
            await awareness.close()
        assert registry.get_sample_value("lodestar_k8s_known_engine_pods") is None  # unregistered on close
        # A second instance in the same process (host reconfiguration) must still start.
        twin = KubernetesAwareness(KubernetesOptions(engine_namespace="llm"), api_client, registry=registry)
        other = KubernetesAwareness(KubernetesOptions(engine_namespace="llm"), api_client, registry=registry)
        await twin.start()
        await other.start()
        await other.close()
        await twin.close()
    with pytest.raises(ValueError):
        KubernetesAwareness(KubernetesOptions(sharing=True), client.ApiClient())


async def test_a_learned_policy_follower_hot_loads_a_shared_checkpoint(api: client.ApiClient) -> None:
    blob = learned_checkpoint(4, (64, 64), seed=1)
    leader_board = ConfigMapModelBoard(api, "router")
    assert await leader_board.publish(ModelRecord.of(blob, version=1, replica="router-a", created_at=1.0))

    policy = LearnedPolicy(seed=0)
    try:
        assert policy.model is None
        callables = policy_callables(policy)
        assert callables.export() == b""  # untrained: nothing to offer yet, and no error either
        follower = SharingCore("router-b", callables.export, callables.import_,
                               validation_loss=callables.validation_loss)
        shared = await ConfigMapModelBoard(api, "router").read_shared()
        assert follower.adopt(shared) and follower.stats.loads == 1
        assert policy.model is not None and policy.model.heads == 4
        # Its own export is now the loaded model, in the same wire format.
        assert callables.export()[:16] == blob[:16]
        # A foreign blob is refused by the policy and counted, not raised.
        assert not follower.adopt(ModelRecord.of(b"not a checkpoint", version=2, replica="x", created_at=2.0))
        assert follower.stats.refusals == 1
    finally:
        policy.close()


async def test_start_from_env_uses_the_kubeconfig_outside_a_cluster(
    apiserver: ApiServer, api: client.ApiClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "stand-in",
        "clusters": [{"name": "stand-in", "cluster": {"server": apiserver.url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "u"}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    core = client.CoreV1Api(api)
    await core.create_node(node("gpu-k", "NVIDIA-L40S"))
    await core.create_namespaced_pod("llm", pod("engine-k", "10.8.0.1", "gpu-k"))
    awareness = await KubernetesAwareness.start_from_env(
        env={"LODESTAR_K8S_ENGINE_NAMESPACE": "llm", "POD_NAME": "router-x"}, registry=CollectorRegistry()
    )
    try:
        assert awareness.sharing is None and awareness.options.replica_id == "router-x"
        await wait_until(lambda: (awareness.hardware.descriptor_for("http://10.8.0.1:8000") or HardwareInfo())
                         .gpu_class == "L40S", what="discovery through the kubeconfig client")
    finally:
        await awareness.close()
