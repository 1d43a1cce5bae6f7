"""helm-values/kubernetes-values.yaml renders against the upstream chart (skips, like tests/prodstack, without
the chart or a Helm renderer)."""

from __future__ import annotations

import pytest

from tests.prodstack.test_helm_values import VALUES, _router, render

pytestmark = pytest.mark.prodstack


def test_kubernetes_values_render_downward_api_env_and_the_shared_volume() -> None:
    pod = _router(render(VALUES / "kubernetes-values.yaml"))
    [container] = pod["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["POD_UID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["LODESTAR_K8S_SHARING"]["value"] == "true"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["lodestar-shared"] == env["LODESTAR_K8S_SHARED_VOLUME"]["value"]
    assert {v["name"] for v in pod["volumes"]} >= {"lodestar-shared"}
    # rbac.yaml binds "<release>-router-service-account": the name the chart gives the router.
    assert pod["serviceAccountName"] == "t-router-service-account"
