"""helm-values/*.yaml render against the upstream chart (skips without the chart or a Helm renderer).

Renderer: a `helm` binary on PATH (`helm template`), else the Helm library from PyPI's `helm-python-sdk`
(Helm v4 compiled as a shared library; no binary needed). Chart: $LODESTAR_PRODUCTION_STACK/helm.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.prodstack
VALUES = Path(__file__).resolve().parents[2] / "helm-values"


def _chart() -> Path:
    checkout = os.environ.get("LODESTAR_PRODUCTION_STACK")
    if not checkout or not (Path(checkout) / "helm" / "Chart.yaml").exists():
        pytest.skip("production-stack chart absent: set LODESTAR_PRODUCTION_STACK to a checkout")
    return Path(checkout) / "helm"


def render(values_file: Path) -> list[dict[str, Any]]:
    chart = _chart()
    if shutil.which("helm"):
        out = subprocess.run(["helm", "template", "t", str(chart), "-f", str(values_file)], check=True,
                             capture_output=True, text=True, timeout=120).stdout
        return [d for d in yaml.safe_load_all(out) if d]
    if importlib.util.find_spec("helm_python") is None:
        pytest.skip("no Helm renderer: install `helm`, or `pip install helm-python-sdk` (throwaway venv)")
    from helm_python.chart import Chart

    with Chart.load(str(chart)) as loaded:
        manifests = loaded.render(values=yaml.safe_load(values_file.read_text()), name="t", namespace="default")
    return [d for text in manifests.values() for d in yaml.safe_load_all(text) if d]


def _router(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "t-deployment-router"]
    return deployment["spec"]["template"]["spec"]


@pytest.mark.parametrize("name", ["learned.yaml", "learned-patched.yaml"])
def test_values_render_a_learned_router(name: str) -> None:
    docs = render(VALUES / name)
    pod = _router(docs)
    [container] = pod["containers"]
    args = container["args"]
    assert args[args.index("--routing-logic") + 1] == "learned"
    assert args.count("--routing-logic") == 1
    assert "--max-instance-failover-reroute-attempts" in args
    assert container["image"].startswith("registry.example.com/")
    assert container["resources"]["limits"]["memory"] == "2Gi"
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 60
    assert {"mountPath": "/var/lib/lodestar", "name": "lodestar-state"} in container["volumeMounts"]
    assert any(v["name"] == "lodestar-state" for v in pod["volumes"])
    assert any(d["kind"] == "ServiceMonitor" for d in docs)
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    _check_kubernetes_awareness(docs, pod, container)
    if name == "learned.yaml":
        assert env["LODESTAR_CHECKPOINT_PATH"] == "/var/lib/lodestar/checkpoint.bin"
        assert args[args.index("--lodestar-scrape-interval") + 1] == "1"
    else:
        config = yaml.safe_load(args[args.index("--routing-logic-config") + 1])
        assert config["checkpoint_path"] == "/var/lib/lodestar/checkpoint.bin"
        from lodestar_vllm.integrations.production_stack.settings import LodestarSettings

        assert LodestarSettings.from_sources(None, {}, config=config).scrape_interval == 1.0


def _check_kubernetes_awareness(docs: list[dict[str, Any]], pod: dict[str, Any], container: dict[str, Any]) -> None:
    """The Kubernetes entries live in the same lists as ours (Helm replaces lists across -f files), the replicas
    never share a ReadWriteOnce checkpoint, and the engine selector is the one the chart's discovery uses."""
    from lodestar_vllm.integrations.production_stack.runtime import kubernetes_requested

    [deployment] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "t-deployment-router"]
    env = {e["name"]: e for e in container["env"]}
    values = {name: item.get("value", "") for name, item in env.items()}
    assert kubernetes_requested(values) and values["LODESTAR_K8S_SHARING"] == "true"
    for name, field in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"),
                        ("POD_UID", "metadata.uid"), ("LODESTAR_K8S_ENGINE_NAMESPACE", "metadata.namespace")):
        assert env[name]["valueFrom"]["fieldRef"]["fieldPath"] == field
    args = container["args"]
    assert values["LODESTAR_K8S_ENGINE_SELECTOR"] == args[args.index("--k8s-label-selector") + 1]
    assert "LODESTAR_TRAINER_MODE" in values  # the learned entries survived next to the Kubernetes ones
    # helm-values/rbac.yaml binds "vllm-router-service-account": release name + the chart's suffix.
    assert pod["serviceAccountName"] == "t-router-service-account"
    replicas = deployment["spec"]["replicas"]
    [state] = [v for v in pod["volumes"] if v["name"] == "lodestar-state"]
    if replicas > 1:  # one checkpoint file per pod: no volume that two replicas (or two nodes) would share
        assert "emptyDir" in state and "persistentVolumeClaim" not in state
