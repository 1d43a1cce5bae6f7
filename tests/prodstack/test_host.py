"""The adapter against the REAL production-stack router (skips when it is not installed).

Run here with a throwaway venv holding production-stack @ a6c01db0 and this package (docs/production-stack.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lodestar_vllm.integrations.production_stack.loopback import (
    ThreadedServer,
    free_port,
    start_router,
    stop_router,
)
from tests.prodstack.conftest import require_host
from tests.prodstack.fake_engine import make_engine
from tests.prodstack.stub_policy import StubPolicy

pytestmark = pytest.mark.prodstack
REPO = Path(__file__).resolve().parents[2]
STUB = "tests.prodstack.stub_policy:StubPolicy"


@pytest.fixture
def host_modules() -> Iterator[object]:
    """check_host() on the real host, with every module attribute the hooks replace restored afterwards."""
    require_host()
    from lodestar_vllm.integrations.production_stack import compat

    host = compat.check_host()
    saved = [(m, dict(vars(m))) for m in (host.routing_logic, host.request, host.app, host.dynamic_config)]
    lifespan = host.app.app.router.lifespan_context
    yield host
    for module, attrs in saved:
        for name in ("process_request", "initialize_routing_logic", "get_routing_logic", "cleanup_routing_logic",
                     "reconfigure_routing_logic"):
            if name in attrs:
                setattr(module, name, attrs[name])
    host.app.app.router.lifespan_context = lifespan
    host.routing_logic.RoutingInterface.__class__._instances.clear()


def test_entry_point_names_learned_router() -> None:
    require_host()
    from importlib.metadata import entry_points

    [ep] = [e for e in entry_points(group="vllm_router.routing_logics") if e.name == "learned"]
    from lodestar_vllm.integrations.production_stack.routing import LearnedRouter

    assert ep.load() is LearnedRouter


def test_selection_through_the_hosts_by_name_imports(host_modules) -> None:
    from vllm_router.service_discovery import EndpointInfo

    from lodestar_vllm.integrations.production_stack import compat, runtime
    from lodestar_vllm.integrations.production_stack.routing import LearnedRouter

    host = host_modules
    rt = runtime.install_runtime(
        runtime.LodestarRuntime(runtime.LodestarSettings(policy="stub"), policy=StubPolicy())
    )
    compat.install_routing_logic(host)
    router = host.app.initialize_routing_logic("learned", max_instance_failover_reroute_attempts=2)
    assert isinstance(router, LearnedRouter) and isinstance(router, host.routing_logic.RoutingInterface)
    assert host.app.get_routing_logic() is router and router.max_instance_failover_reroute_attempts == 2
    eps = [EndpointInfo(url=u, model_names=["m"], Id=u, added_timestamp=0.0, model_label="x", sleep=False)
           for u in ("http://a:1", "http://b:1")]
    assert router.route_request(eps, {}, {}, _request({"model": "m", "prompt": "x"})) in {"http://a:1", "http://b:1"}
    # dynamic reconfiguration drops the singleton; the learned state stays
    again = host.dynamic_config.reconfigure_routing_logic("learned")
    assert again is not router and runtime.current_runtime() is rt and len(rt.policy.routes) == 1
    other = host.app.initialize_routing_logic("roundrobin")  # non-learned names still work
    assert type(other).__name__ == "RoundRobinRouter"


def test_mismatching_host_is_refused_loudly(host_modules, monkeypatch: pytest.MonkeyPatch) -> None:
    from lodestar_vllm.integrations.production_stack import compat

    async def process_request(req, body):  # an upstream refactor changed the signature
        yield b""

    monkeypatch.setattr(host_modules.request, "process_request", process_request)
    with pytest.raises(compat.HostMismatch, match="a6c01db0"):
        compat.check_host()
    monkeypatch.setattr(host_modules.request, "process_request", lambda *a: None)
    with pytest.raises(compat.HostMismatch, match="no longer an async generator"):
        compat.check_host()


def _request(body: dict) -> object:
    from starlette.requests import Request

    req = Request({"type": "http", "method": "POST", "path": "/v1/completions", "headers": []})
    req._body = json.dumps(body).encode()
    return req


def _bin(name: str) -> str:
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.exists():
        pytest.skip(f"{name} not installed in this environment ({path})")
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["launcher", "callbacks", "patched"])
def test_real_router_outcomes_for_ok_failed_and_aborted(activation: str, tmp_path: Path) -> None:
    """The stock router process with `learned`: failover after a dead engine, a client abort, status/explain."""
    require_host()
    dead = f"http://127.0.0.1:{free_port()}"
    with ThreadedServer(make_engine("a", chunks=3)) as a, ThreadedServer(make_engine("b", chunks=3)) as b:
        port = str(free_port())
        stock = ["--port", port, "--host", "127.0.0.1", "--service-discovery", "static",
                 "--static-backends", f"{a.url},{b.url},{dead}", "--static-models", "m,m,m",
                 "--max-instance-failover-reroute-attempts", "2", "--engine-stats-interval", "1"]
        if activation == "patched":
            from vllm_router.routers import routing_logic

            if not hasattr(routing_logic, "routing_logic_choices"):
                pytest.skip("installed router lacks patches/0001 (entry-point routing logics)")
            config = json.dumps({"policy": STUB, "scrape_interval": 0.2})
            cmd = [_bin("vllm-router"), *stock, "--routing-logic", "learned", "--routing-logic-config", config]
            env = {}
        elif activation == "launcher":
            cmd = [_bin("lodestar-vllm-router"), *stock, "--routing-logic", "learned", "--lodestar-policy", STUB,
                   "--lodestar-scrape-interval", "0.2", "--lodestar-checkpoint-path", str(tmp_path / "ckpt.json")]
            env = {}
        else:
            cmd = [_bin("vllm-router"), *stock, "--routing-logic", "roundrobin",
                   "--callbacks", "lodestar_vllm.integrations.production_stack.callbacks.handler"]
            env = {"LODESTAR_POLICY": STUB, "LODESTAR_SCRAPE_INTERVAL": "0.2"}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
        proc, url = start_router(cmd, env=env, log_path=str(tmp_path / "router.log"))
        try:
            with httpx.Client(base_url=url, timeout=20) as client:
                ids = []
                for i in range(6):
                    body = {"model": "m", "prompt": f"p{i}", "max_tokens": 3, "stream": i % 2 == 0}
                    r = client.post("/v1/completions", json=body, headers={"X-Request-Id": f"t-{i}"})
                    assert r.status_code == 200, r.text
                    ids.append(r.headers["x-request-id"])
                # a client that goes away mid-stream
                body = {"model": "m", "prompt": "abort me", "stream": True, "gap": 0.3}
                with client.stream("POST", "/v1/completions", json=body, headers={"X-Request-Id": "gone"}) as r:
                    next(r.iter_raw())
                status = _wait_for(client, lambda s: s["attempts"]["in_flight"] == 0
                                   and s["attempts"]["pending"] == 0 and s["scraper"]["rounds"] > 0)
                explain = client.get("/lodestar/explain/t-0").json()
                metrics = client.get("/metrics").text
        finally:
            rc = stop_router(proc)
    log = (tmp_path / "router.log").read_text(errors="replace")
    outcomes = status["attempts"]["outcomes"]
    assert outcomes["ok"] == 6, log[-3000:]
    assert outcomes["aborted"] == 1, log[-3000:]
    # the stub sends one request in three to the dead engine first; each such attempt fails then fails over
    assert outcomes["failed"] >= 1 and status["routed"] == 7 + outcomes["failed"]
    assert all(v == 0 for v in status["policy_status"]["outstanding"].values())  # no leaked in-flight count
    assert explain["attempts"][-1]["outcome"]["status"] == "ok" and explain["attempts"][-1]["policy"]["stub"]
    assert sorted(status["scraper"]["engines"]) == sorted([a.url, b.url])
    assert "vllm_router" in metrics or "num_requests" in metrics
    assert rc in (0, -15), log[-3000:]
    if activation == "launcher":  # written at shutdown, after every outcome was delivered; restored at start
        assert json.loads((tmp_path / "ckpt.json").read_text()) == {"outcomes": 7 + outcomes["failed"]}
        with ThreadedServer(make_engine("a")) as a2:
            cmd[cmd.index("--static-backends") + 1] = a2.url
            cmd[cmd.index("--static-models") + 1] = "m"
            cmd[cmd.index("--port") + 1] = str(free_port())
            proc, url = start_router(cmd, env=env, log_path=str(tmp_path / "router2.log"))
            try:
                again = httpx.get(url + "/lodestar/status", timeout=10).json()
            finally:
                stop_router(proc)
        assert again["checkpoint"]["restored"] is True and again["routed"] == 0


def _wait_for(client: httpx.Client, ready, timeout: float = 10.0) -> dict:
    import time

    deadline = time.monotonic() + timeout
    while True:
        status = client.get("/lodestar/status").json()
        if ready(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("flag", "message"),
    [(["--lodestar-seed", "abc"], "lodestar seed"), (["--lodestar-policy", "nope"], "unknown policy 'nope'")],
)
def test_launcher_refuses_bad_settings_before_serving(flag: list[str], message: str) -> None:
    require_host()
    stock = ["--service-discovery", "static", "--static-backends", "http://127.0.0.1:9", "--static-models", "m",
             "--routing-logic", "learned", "--port", str(free_port())]
    done = subprocess.run([_bin("lodestar-vllm-router"), *stock, *flag], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr
