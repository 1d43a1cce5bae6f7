"""Measure the Kubernetes side against the real-HTTP API stand-in (kmock, test extra):

1. checkpoint sizes of the learned policy's wire format vs the ConfigMap cap (inline or shared volume);
2. publish -> follower-adopt latency over HTTP per checkpoint size (watch delivery + decode + digest check);
3. the request-path hardware lookup cost with 1000 engine pods;
4. API-server load of model sharing: requests per replica per minute in steady state.

    .venv/bin/python -m tests.k8s.measure_sharing [--reps 20] [--seconds 12] [--plot sharing.png]

Loopback HTTP on a shared box: the latencies bound the transport cost, not a production API server's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
import timeit
from collections import Counter
from pathlib import Path

from lodestar_vllm.integrations.kubernetes.hardware import HardwareWatcher
from lodestar_vllm.integrations.kubernetes.lease import LeaseElector
from lodestar_vllm.integrations.kubernetes.model_board import (
    DEFAULT_MAX_INLINE_BYTES,
    ConfigMapModelBoard,
    _compress,
)
from lodestar_vllm.integrations.kubernetes.replica import SharedModelReplica
from lodestar_vllm.integrations.kubernetes.sharing import ModelRecord, SharingConfig, SharingCore
from tests.k8s.checkpoints import learned_checkpoint
from tests.k8s.conftest import ApiServer
from tests.k8s.toy_learner import ToyLearner

ARCHITECTURES = [("default 4x(64,64)", 4, (64, 64)), ("8x(256,256)", 8, (256, 256)),
                 ("8x(512,512)", 8, (512, 512)), ("16x(512,512)", 16, (512, 512))]


async def publish_latency(server: ApiServer, payload: bytes, reps: int, volume: Path) -> list[float]:
    async with server.api_client() as leader_client, server.api_client() as follower_client:
        leader = ConfigMapModelBoard(leader_client, "bench", volume_dir=volume)
        follower = ConfigMapModelBoard(follower_client, "bench", volume_dir=volume)
        start = (await leader.read_shared() or ModelRecord.of(b"-", version=0, replica="x", created_at=0)).version
        arrived: asyncio.Queue[tuple[int, float]] = asyncio.Queue()

        async def follow() -> None:
            async for record in follower.watch_shared(watch_timeout_s=120):
                arrived.put_nowait((record.version, time.perf_counter()))

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.3)
        while not arrived.empty():
            arrived.get_nowait()
        latencies = []
        for i in range(reps):
            # A distinct payload per rep (the digest changes, as a retrained model's would).
            body = payload[:-8] + i.to_bytes(8, "little")
            sent = time.perf_counter()
            assert await leader.publish(ModelRecord.of(body, version=start + i + 1, replica="a", created_at=i))
            while True:
                version, at = await asyncio.wait_for(arrived.get(), timeout=30)
                if version == start + i + 1:
                    latencies.append(at - sent)
                    break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return latencies


async def api_load(server: ApiServer, seconds: float, replicas: int = 3, interval_s: float = 1.0) -> Counter:
    """Requests by (resource, method, watch) from ``replicas`` replicas sharing with ``interval_s`` intervals
    and the default 2 s lease retry period."""
    server.emulator.calls.clear()
    config = SharingConfig(candidate_interval_s=interval_s, publish_interval_s=interval_s, candidate_ttl_s=60)
    running = []
    clients = []
    learners = [ToyLearner() for _ in range(replicas)]
    for i in range(replicas):
        api_client = server.api_client()
        clients.append(api_client)
        core = SharingCore(f"r{i}", learners[i].export, learners[i].import_,
                           validation_loss=learners[i].validation_loss, config=config)
        elector = LeaseElector(api_client, "load", "pub", f"r{i}")  # defaults: 15 s lease, 2 s retry
        replica = SharedModelReplica(core, ConfigMapModelBoard(api_client, "load"), elector, tick_s=0.25)
        await replica.start()
        running.append(replica)
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    step = 0
    while loop.time() < end:
        for i, learner in enumerate(learners):  # every replica keeps learning: new candidates each interval
            learner.observe(f"r{i}-{step}")
        step += 1
        await asyncio.sleep(0.2)
    for replica in running:
        await replica.close()
    for api_client in clients:
        await api_client.close()
    return Counter(
        ("leases" if "/leases" in path else "configmaps", method, watching)
        for method, path, watching in server.emulator.calls
        if "/namespaces/load/" in path
    )


async def lookup_cost(pods: int = 1000) -> float:
    from kubernetes_asyncio import client

    api_client = client.ApiClient(client.Configuration(host="http://127.0.0.1:9"))
    watcher = HardwareWatcher(api_client)
    items = [{"metadata": {"name": f"engine-{i}", "namespace": "llm"},
              "spec": {"nodeName": f"n{i % 50}", "containers": [{"name": "vllm", "args": ["-tp", "2"]}]},
              "status": {"podIP": f"10.{i // 250}.{i % 250}.1"}} for i in range(pods)]
    watcher._apply_pods("SYNC", {"items": items})  # the state a watch would build; lookups are what we time
    urls = [f"http://10.{i // 250}.{i % 250}.1:8000" for i in range(pods)]
    n = 200_000
    sample = urls[:100]

    def lookups() -> None:
        for url in sample:
            watcher.descriptor_for(url)

    seconds = timeit.timeit(lookups, number=n // 100)
    await api_client.close()
    return seconds / n * 1e9


def plot_latency(points: list[tuple[str, int, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    sizes = [size / 1e6 for _, size, _ in points]
    ax.boxplot([[x * 1e3 for x in lat] for _, _, lat in points], positions=sizes,
               widths=[max(0.3, s * 0.08) for s in sizes], manage_ticks=False)
    ax.plot(sizes, [statistics.median(lat) * 1e3 for _, _, lat in points], "o-", label="median")
    ax.axvline(DEFAULT_MAX_INLINE_BYTES / 1e6, color="grey", linestyle="--", label="ConfigMap inline budget")
    ax.set_xlabel("checkpoint size (MB)")
    ax.set_ylabel("publish -> follower adopted (ms)")
    ax.set_title("Model sharing over the API stand-in (loopback)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


async def main(reps: int, seconds: float, plot: Path | None) -> int:
    # The leader-election library logs every lost create race with a traceback: expected here, not news.
    logging.getLogger("kubernetes_asyncio.leaderelection").setLevel(logging.CRITICAL)
    logging.getLogger("lodestar_vllm").setLevel(logging.ERROR)
    print("1/4 checkpoint sizes", file=sys.stderr)
    rows = []
    blobs = {}
    for label, heads, hidden in ARCHITECTURES:
        blob = learned_checkpoint(heads, hidden)
        blobs[label] = blob
        encoding, stored = _compress(blob)
        where = "ConfigMap" if len(stored) <= DEFAULT_MAX_INLINE_BYTES else "shared volume"
        rows.append((label, len(blob), f"{len(stored):,} ({encoding})", where))
    print("| architecture (heads x hidden) | checkpoint bytes | stored bytes (encoding) | stored in |")
    print("|---|---:|---:|---|")
    for label, raw, stored_text, where in rows:
        print(f"| {label} | {raw:,} | {stored_text} | {where} |")

    server = ApiServer()
    async with server.emulator:
        await server.start()
        print(f"2/4 publish -> adopt latency ({reps} reps per size)", file=sys.stderr)
        print("\n| payload | bytes | median ms | p95 ms | max ms |")
        print("|---|---:|---:|---:|---:|")
        points = []
        with tempfile.TemporaryDirectory() as volume:
            for label in blobs:
                lat = sorted(await publish_latency(server, blobs[label], reps, Path(volume)))
                points.append((label, len(blobs[label]), lat))
                p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
                print(f"| {label} | {len(blobs[label]):,} | {statistics.median(lat) * 1e3:.1f} | "
                      f"{p95 * 1e3:.1f} | {lat[-1] * 1e3:.1f} |", flush=True)
        print(f"3/4 API load: 3 replicas, 1 s intervals, {seconds:.0f} s", file=sys.stderr)
        calls = await api_load(server, seconds)
        await server.stop()
    configmap_calls = sum(n for (kind, _, _), n in calls.items() if kind == "configmaps")
    lease_calls = sum(n for (kind, _, _), n in calls.items() if kind == "leases")
    per_interval = configmap_calls / 3 / seconds  # 1 s intervals: calls per replica per interval
    per_retry = lease_calls / 3 / (seconds / 2.0)  # 2 s retry period
    print(f"\nAPI requests, 3 replicas, {seconds:.0f} s, 1 s sharing intervals, 2 s lease retry:")
    print("| resource | method | watch | requests |")
    print("|---|---|---|---:|")
    for (kind, method, watching), n in sorted(calls.items()):
        print(f"| {kind} | {method} | {watching} | {n} |")
    print(f"per replica: {per_interval:.2f} ConfigMap calls per sharing interval, {per_retry:.2f} Lease calls per "
          f"retry period -> at the defaults (30 s intervals, 2 s retry): "
          f"{per_interval * 2 + per_retry * 30:.0f} requests per replica per minute")
    print("4/4 request-path lookup", file=sys.stderr)
    print(f"\ndescriptor_for with 1000 engine pods: {await lookup_cost():.0f} ns per lookup")
    if plot is not None:
        plot_latency(points, plot)
        print(f"plot: {plot}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--plot", type=Path, default=None, help="write the latency-vs-size plot (PNG) here")
    arguments = parser.parse_args()
    if arguments.reps < 1 or arguments.seconds <= 0:
        parser.error("--reps must be >= 1 and --seconds > 0")
    raise SystemExit(asyncio.run(main(arguments.reps, arguments.seconds, arguments.plot)))
