"""The drills against the REAL production-stack router (``lodestar-vllm-router``, learned logic) on loopback.

Skipped unless production-stack's router is importable (a throwaway venv, see docs/production-stack.md):

    /tmp/venv-ps/bin/python -m pytest tests/drills/test_real_host.py -s

Same engines and fault injection as the stand-in drills; what must hold is read from the router's own
/lodestar/status and its log, since the router runs in its own process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sysconfig
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from lodestar_vllm.integrations.production_stack.loopback import free_port, start_router, stop_router
from tests.drills.conftest import MODEL, completion, engines, wait_for
from tests.drills.test_burst_and_bodies import MALFORMED, RAW_BODIES
from tests.drills.test_engine_faults import _emulate_process, _healthy, _stream
from tests.prodstack.conftest import require_host

pytestmark = [pytest.mark.prodstack, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
OPTIONS = json.dumps({"first_fit_samples": 40, "refit_every_samples": 80, "train_steps": 60, "ensemble": 2,
                      "hidden": [16, 16]})


@contextmanager
def real_router(urls: list[str], tmp_path: Path, failover: int = 1) -> Iterator[tuple[str, Path]]:
    require_host()
    script = Path(sysconfig.get_path("scripts")) / "lodestar-vllm-router"
    if not script.exists():
        pytest.skip(f"lodestar-vllm-router not installed in this environment ({script})")
    port = str(free_port())
    cmd = [str(script), "--host", "127.0.0.1", "--port", port, "--service-discovery", "static",
           "--static-backends", ",".join(urls), "--static-models", ",".join([MODEL] * len(urls)),
           "--routing-logic", "learned", "--max-instance-failover-reroute-attempts", str(failover),
           "--engine-stats-interval", "1", "--log-level", "warning", "--lodestar-scrape-interval", "0.2",
           "--lodestar-scrape-timeout", "0.5", "--lodestar-policy-options", OPTIONS]
    log = tmp_path / "router.log"
    env = {"PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc, url = start_router(cmd, env=env, log_path=str(log))
    try:
        yield url, log
    finally:
        stop_router(proc)


def _status(url: str) -> dict:
    return httpx.get(url + "/lodestar/status", timeout=10).json()


def _settled_status(url: str) -> dict:
    holder: dict = {}

    def ready() -> bool:
        holder.update(_status(url))
        return holder["attempts"]["pending"] == 0 and holder["attempts"]["in_flight"] == 0

    wait_for(ready, 15, "every attempt to get its outcome")
    return holder


def _assert_accounted(status: dict, log: Path) -> None:
    assert sum(status["attempts"]["outcomes"].values()) == status["routed"], status["attempts"]
    assert status["attempts"]["policy_hook_errors"] == 0 and status["fallbacks"] == 0, status
    text = log.read_text(errors="replace")
    assert "learned routing failed" not in text and "policy.route failed" not in text, text[-2000:]


async def test_real_host_engine_faults(tmp_path: Path) -> None:
    """Must hold on the real host: with one engine answering 500 and serving garbage /metrics, and another
    SIGKILLed mid-stream, the router answers every request with 200 or the engine's own 500 (streams on the
    killed engine break), every attempt gets one outcome, the policy raises nothing, scraping goes on."""
    port = free_port()
    victim = _emulate_process(port, time_scale=1.0)
    dead_url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(dead_url), 30, "the emulate subprocess")
        with engines(2) as (bad, good), real_router([bad.url, good.url, dead_url], tmp_path) as (url, log):
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                warm = [await _stream(client, completion(f"warm {i} " * 20)) for i in range(30)]
                bad.faults.state.errors_500 = True
                bad.faults.state.metrics = "garbage"
                long = [asyncio.create_task(_stream(client, completion(f"long {i} " * 20, max_tokens=200)))
                        for i in range(12)]
                await asyncio.sleep(1.5)
                os.killpg(victim.pid, signal.SIGKILL)
                victim.wait(timeout=10)
                broken = await asyncio.wait_for(asyncio.gather(*long), 90)
                after = [await _stream(client, completion(f"after {i} " * 20)) for i in range(30)]
            status = _settled_status(url)
            scraper = status["scraper"]
            _assert_accounted(status, log)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(timeout=10)
    assert all(code == 200 for code, _, _ in warm)
    assert all(code in (200, 500, -1) for code, _, _ in broken)
    assert all(code in (200, 500) for code, _, _ in after), after
    # garbage is a parse error; the dead engine is an error, or gone once the host's discovery dropped it
    assert bad.url in scraper["errors"], scraper
    assert dead_url in scraper["errors"] or dead_url not in scraper["engines"], scraper
    codes = [c for c, _, _ in after]
    print(f"\nreal host faults: after the kill {codes.count(200)} ok / {codes.count(500)} engine 500s of 30; "
          f"outcomes {status['attempts']['outcomes']}; long streams: "
          f"{sum(1 for c, t, _ in broken if c == 200 and '[DONE]' in t)} finished, "
          f"{sum(1 for c, t, _ in broken if not (c == 200 and '[DONE]' in t))} broken or 500")


async def test_real_host_burst_and_malformed_bodies(tmp_path: Path) -> None:
    """Must hold on the real host: 1,000 concurrent streams all complete (200 + [DONE]) and are all accounted;
    malformed bodies get the host's 4xx or the engine's answer, never a 5xx, and the policy raises nothing."""
    burst = int(os.environ.get("LODESTAR_DRILL_BURST", "1000"))
    with engines(3, time_scale=50.0) as es, real_router([e.url for e in es], tmp_path) as (url, log):
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(60):
                assert client.post("/v1/completions", json=completion(f"warm {i} " * 20)).status_code == 200
            codes = []
            for body in MALFORMED:
                raw = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
                codes.append(client.post("/v1/completions", content=raw).status_code)
            for raw in RAW_BODIES:
                codes.append(client.post("/v1/completions", content=raw).status_code)
        limits = httpx.Limits(max_connections=burst + 10, max_keepalive_connections=burst + 10)
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
            results = await asyncio.wait_for(asyncio.gather(*(
                _stream(client, completion(f"burst {i % 40} shared prefix " * 8 + f"tail {i}")) for i in range(burst))),
                240)
        wall = time.monotonic() - started
        status = _settled_status(url)
        metrics = httpx.get(url + "/metrics", timeout=10).text
        _assert_accounted(status, log)
    assert all(c < 500 for c in codes), codes
    ok = sum(1 for c, t, _ in results if c == 200 and t.rstrip().endswith("data: [DONE]"))
    assert ok == burst, {c: sum(1 for r in results if r[0] == c) for c in {r[0] for r in results}}
    print(f"\nreal host burst: {ok}/{burst} streams ok in {wall:.1f} s; malformed codes {sorted(set(codes))}; "
          f"decision latency buckets: " + " ".join(
              line.split("{")[1] for line in metrics.splitlines()
              if line.startswith("lodestar_decision_latency_seconds_bucket")))
