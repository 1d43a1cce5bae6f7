"""The REAL production-stack router process (our launcher, the learned policy) with Kubernetes awareness
against the API stand-in: the engine's GPU, read from its pod and node, shows in the learned policy's features
for that engine (/lodestar/explain), and the awareness counters in /lodestar/status and /metrics.

Needs the router (production-stack) and the k8s + test extras in one environment; skips otherwise, e.g.
    LODESTAR_PRODUCTION_STACK=/tmp/ps <router venv>/bin/python -m pytest -q tests/k8s/test_router_process.py
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes_asyncio import client

from lodestar_vllm.integrations.production_stack.loopback import (
    ThreadedServer,
    free_port,
    start_router,
    stop_router,
)
from tests.k8s.conftest import ApiServer
from tests.k8s.test_hardware_watcher import node, pod
from tests.prodstack.conftest import require_host
from tests.prodstack.fake_engine import make_engine
from tests.prodstack.test_host import REPO

pytestmark = [pytest.mark.prodstack, pytest.mark.slow]


async def _status_when(http: httpx.AsyncClient, ready: Callable[[dict[str, Any]], bool],
                       timeout_s: float = 20.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        status = (await http.get("/lodestar/status")).json()
        if ready(status) or loop.time() > deadline:
            return status
        await asyncio.sleep(0.1)


async def test_router_process_routes_with_discovered_hardware(
    apiserver: ApiServer, api: client.ApiClient, tmp_path: Path
) -> None:
    require_host()
    # The launcher as a module of this interpreter (the environment that has the k8s extra).
    router = [sys.executable, "-m", "lodestar_vllm.integrations.production_stack.launcher"]
    core = client.CoreV1Api(api)
    await core.create_node(node("gpu-h", "NVIDIA-H100-80GB-HBM3"))
    # All loopback engines share one IP; the discovered pod owns it, the operator names the other engine.
    await core.create_namespaced_pod("llm", pod("engine-h", "127.0.0.1", "gpu-h"))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "stand-in",
        "clusters": [{"name": "stand-in", "cluster": {"server": apiserver.url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "u"}}],
    }))
    with ThreadedServer(make_engine("a", chunks=2)) as a, ThreadedServer(make_engine("b", chunks=2)) as b:
        port = str(free_port())
        cmd = [*router, "--port", port, "--host", "127.0.0.1", "--service-discovery", "static",
               "--static-backends", f"{a.url},{b.url}", "--static-models", "m,m", "--engine-stats-interval", "1",
               "--routing-logic", "learned", "--lodestar-scrape-interval", "0.5",
               "--lodestar-hardware", f"{b.url}=L4"]
        env = {"KUBECONFIG": str(kubeconfig), "LODESTAR_K8S_ENGINE_NAMESPACE": "llm",
               "LODESTAR_K8S_ENGINE_SELECTOR": "app=vllm-engine", "POD_NAME": "router-0",
               "LODESTAR_TRAINER_MODE": "off", "KUBERNETES_SERVICE_HOST": "",
               "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        # Started from a thread: the stand-in API serves on this test's event loop meanwhile.
        proc, url = await asyncio.to_thread(start_router, cmd, env, 90.0, str(tmp_path / "router.log"))
        try:
            async with httpx.AsyncClient(base_url=url, timeout=20) as http:
                status = await _status_when(http, lambda s: (s["kubernetes"] or {}).get("known_engine_pods") == 1)
                # Node facts arrive on their own watch; give them a moment before routing on them.
                await asyncio.sleep(1.0)
                r = await http.post("/v1/completions", json={"model": "m", "prompt": "hello", "max_tokens": 2},
                                    headers={"X-Request-Id": "k8s-1"})
                assert r.status_code == 200, r.text
                explain = (await http.get("/lodestar/explain/k8s-1")).json()
                metrics = (await http.get("/metrics")).text
        finally:
            rc = await asyncio.to_thread(stop_router, proc)
    log = (tmp_path / "router.log").read_text(errors="replace")
    assert status["kubernetes"]["known_engine_pods"] == 1, log[-3000:]
    features = {c["url"]: c["features"] for c in explain["attempts"][0]["policy"]["candidates"]}
    assert features[a.url]["gpu_H100"] == 1.0 and features[a.url]["gpu_unknown"] == 0.0, log[-3000:]
    assert features[b.url]["gpu_L4"] == 1.0  # the static map wins over discovery for the same IP
    assert "lodestar_k8s_known_engine_pods 1.0" in metrics
    assert rc in (0, -15), log[-3000:]
