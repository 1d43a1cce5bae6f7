"""helm-values/rbac.yaml grants what the code really calls: every request made by the watcher, the elector and
the board during a full scenario is mapped to (apiGroup, resource, verb) and checked against the manifest."""

from __future__ import annotations

from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from lodestar_vllm.integrations.kubernetes.awareness import (
    KubernetesAwareness,
    KubernetesOptions,
    LearnerCallables,
)
from lodestar_vllm.integrations.kubernetes.backoff import Backoff
from lodestar_vllm.integrations.kubernetes.model_board import ConfigMapModelBoard
from lodestar_vllm.integrations.kubernetes.sharing import ModelRecord
from tests.k8s.conftest import ApiServer, wait_until
from tests.k8s.toy_learner import ToyLearner

RBAC = Path(__file__).resolve().parents[2] / "helm-values" / "rbac.yaml"
SERVICE_ACCOUNT = "vllm-router-service-account"


def granted() -> set[tuple[str, str, str]]:
    documents = [doc for doc in yaml.safe_load_all(RBAC.read_text()) if doc]
    bound = {
        doc["roleRef"]["name"]
        for doc in documents
        if doc["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and any(s["kind"] == "ServiceAccount" and s["name"] == SERVICE_ACCOUNT for s in doc["subjects"])
    }
    permissions = set()
    for doc in documents:
        if doc["kind"] in ("Role", "ClusterRole") and doc["metadata"]["name"] in bound:
            for rule in doc["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        permissions.update((group, resource, verb) for verb in rule["verbs"])
    return permissions


def needed(method: str, path: str, watching: bool) -> tuple[str, str, str] | None:
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[2:]
    elif parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return None  # discovery endpoints need no RBAC
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    resource, named = rest[0], len(rest) > 1
    verb = {
        "GET": "watch" if watching else ("get" if named else "list"),
        "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete",
    }[method]
    return group, resource, verb


def test_manifest_binds_the_router_service_account() -> None:
    permissions = granted()
    assert ("", "nodes", "watch") in permissions and ("coordination.k8s.io", "leases", "update") in permissions
    assert not any(verb == "delete" for _, _, verb in permissions)  # least privilege: nothing deletes


async def test_every_call_of_a_full_scenario_is_granted(apiserver: ApiServer, tmp_path: Path) -> None:
    learner = ToyLearner()
    learner.observe("o-1")
    options = KubernetesOptions(engine_namespace="default", engine_selector="app=vllm", sharing=True,
                                router_namespace="default", replica_id="router-0", pod_uid="u-1",
                                shared_volume=str(tmp_path), candidate_interval_s=0.2, publish_interval_s=0.2,
                                lease_duration_s=2, renew_deadline_s=1.5, retry_period_s=1.0)
    async with apiserver.api_client() as api_client:
        awareness = KubernetesAwareness(
            options, api_client, LearnerCallables(learner.export, learner.import_, learner.validation_loss),
            watcher_kwargs={"backoff": lambda: Backoff(0.05, 0.2)},
            replica_kwargs={"tick_s": 0.1, "backoff": lambda: Backoff(0.05, 0.2)},
            registry=CollectorRegistry(),
        )
        await awareness.start()
        sharing = awareness.sharing
        assert sharing is not None
        await wait_until(lambda: sharing.core.stats.publishes >= 1 and sharing.core.loaded_version >= 1,
                         timeout_s=10, what="publish and load")
        # The volume path and a re-publish exercise the remaining calls.
        board = ConfigMapModelBoard(api_client, "default", volume_dir=tmp_path, max_inline_bytes=16)
        assert await board.publish(ModelRecord.of(b"x" * 4096, version=99, replica="router-0", created_at=1.0))
        await awareness.close(release=True)  # the release path updates the Lease
    permissions = granted()
    calls = {needed(*call) for call in apiserver.emulator.calls} - {None}
    assert {("", "pods", "watch"), ("", "nodes", "list"), ("", "configmaps", "update"),
            ("coordination.k8s.io", "leases", "create")} <= calls
    missing = sorted(call for call in calls if call not in permissions)  # type: ignore[type-var]
    assert not missing, f"rbac.yaml lacks {missing}"
