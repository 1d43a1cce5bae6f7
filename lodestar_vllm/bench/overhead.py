"""``lodestar-vllm bench-overhead``: what the learned router costs on the request path.

1. Decision latency: p50/p99 of one in-process ``route`` (features + prediction + choice + dispatch) with a
   trained model, at 8, 64 and 256 candidate engines (targets: p99 <= 300 us at 8, <= 1 ms at 64).
2. Event-loop lag: p99 lateness of a 1 ms asyncio ticker while requests are routed on the same loop and the
   trainer refits in background mode (target <= 2 ms), next to the same load with training off.
3. Memory: bytes of the prefix index at 1M cached blocks and of the ledger at its record cap (tracemalloc).

Synthetic but representative inputs: prompts of ~1-3k tokens with shared prefixes, engines with scraped
metrics and GPU classes, outcomes from a simple queueing formula so that the model actually trains.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from lodestar_vllm.core.ledger import DecisionRecord, Ledger
from lodestar_vllm.core.prefix_index import PrefixIndex
from lodestar_vllm.core.types import (
    EngineMetrics,
    HardwareInfo,
    InstanceView,
    Outcome,
    OutcomeStatus,
    RequestInfo,
)
from lodestar_vllm.policies.learned import LearnedPolicy
from lodestar_vllm.tokenizer import text_for_tokens

GPUS = ("H100", "A100", "L4", "A30")
RATES = {"H100": 40000.0, "A100": 20000.0, "L4": 6000.0, "A30": 12000.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--instances", default="8,64,256", help="candidate counts to time (comma-separated)")
    parser.add_argument("--decisions", type=int, default=2000, help="timed decisions per instance count")
    parser.add_argument("--lag-seconds", type=float, default=5.0, help="event-loop lag measurement window")
    parser.add_argument("--blocks", type=int, default=1_000_000, help="prefix-index blocks for the memory test")
    parser.add_argument("--ledger-records", type=int, default=100_000, help="ledger records for the memory test")
    parser.add_argument("--warmup", type=int, default=700, help="requests that train the model before timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="directory for results.json and overhead.png")


class _SyntheticFleet:
    """Engines with GPU classes and queues; TTFT = queued work / class speed (enough signal to train)."""

    def __init__(self, n: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.urls = [f"http://engine-{i}:8000" for i in range(n)]
        self.gpus = [GPUS[i % len(GPUS)] for i in range(n)]
        self.busy = [0.0] * n
        self.prefixes = [text_for_tokens(self.rng.randint(512, 2048), seed=seed * 1000 + g) for g in range(32)]
        self.count = 0

    def views(self, now: float) -> list[InstanceView]:
        return [InstanceView(u, EngineMetrics(scraped_at=now - 0.05, num_running=max(b - now, 0) * 10,
                                              num_waiting=0.0, kv_cache_usage=0.5, num_gpu_blocks=20000, block_size=16),
                             HardwareInfo(gpu_class=g)) for u, g, b in zip(self.urls, self.gpus, self.busy, strict=True)]

    def request(self, now: float) -> RequestInfo:
        self.count += 1
        text = self.rng.choice(self.prefixes) + text_for_tokens(self.rng.randint(64, 512), seed=self.count)
        return RequestInfo(f"q{self.count}", "m", text, now, max_tokens=64)

    def outcome(self, req: RequestInfo, url: str, now: float) -> Outcome:
        i = self.urls.index(url)
        tokens = len(req.prompt_text) // 4
        start = max(now, self.busy[i])
        first = start + 0.01 + tokens / RATES[self.gpus[i]]
        self.busy[i] = first
        return Outcome(req.request_id, url, now, OutcomeStatus.OK, first_token_at=first, finished_at=first + 0.6,
                       prompt_tokens=tokens, completion_tokens=64)


def _trained_policy(n: int, seed: int, warmup: int, **options: Any
                    ) -> tuple[LearnedPolicy, _SyntheticFleet, float]:
    first = max(50, min(300, warmup // 2))
    policy = LearnedPolicy(seed=seed, first_fit_samples=first, refit_every_samples=first, **options)
    fleet = _SyntheticFleet(n, seed)
    now = 0.0
    for _ in range(warmup):
        req = fleet.request(now)
        d = policy.route(req, fleet.views(now), now)
        policy.on_outcome(fleet.outcome(req, d.url, now))
        now += 0.02
    return policy, fleet, now


def measure_decisions(n: int, decisions: int, seed: int, warmup: int) -> dict[str, Any]:
    policy, fleet, now = _trained_policy(n, seed, warmup)
    samples = np.empty(decisions)
    paths: dict[str, int] = {}
    gc.collect()
    for k in range(decisions):
        req = fleet.request(now)
        views = fleet.views(now)
        t0 = time.perf_counter()
        d = policy.route(req, views, now)
        samples[k] = time.perf_counter() - t0
        paths[str(d.path)] = paths.get(str(d.path), 0) + 1
        policy.on_outcome(fleet.outcome(req, d.url, now))
        now += 0.02
    policy.close()
    return {"instances": n, "decisions": decisions, "p50_us": float(np.percentile(samples, 50) * 1e6),
            "p99_us": float(np.percentile(samples, 99) * 1e6), "mean_us": float(samples.mean() * 1e6),
            "paths": paths, "model_version": policy.model.version if policy.model else 0,
            "samples_us": (samples * 1e6).tolist()}


async def _lag_probe(seconds: float, period: float = 0.001) -> list[float]:
    lags = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        t0 = loop.time()
        await asyncio.sleep(period)
        lags.append(max(loop.time() - t0 - period, 0.0))
    return lags


async def _lag_while_routing(seconds: float, seed: int, warmup: int, trainer_mode: str) -> dict[str, Any]:
    """Ticker lag while requests are routed on the loop (as a host does); the trainer is ``trainer_mode``."""
    policy, fleet, now = _trained_policy(16, seed, warmup, trainer_mode=trainer_mode, refit_every_s=0.05)
    # Keep a background trainer busy: a refit is due after every 50 samples.
    policy.trainer.config.refit_every_samples = 50
    runs_before = policy.trainer.stats.runs

    async def feed() -> None:
        nonlocal now
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            req = fleet.request(now)
            d = policy.route(req, fleet.views(now), now)
            policy.on_outcome(fleet.outcome(req, d.url, now))
            now += 0.02
            await asyncio.sleep(0.002)

    lags, _ = await asyncio.gather(_lag_probe(seconds), feed())
    runs = policy.trainer.stats.runs - runs_before
    policy.close()
    return {"fits": runs, "p50_ms": float(np.percentile(lags, 50) * 1e3),
            "p99_ms": float(np.percentile(lags, 99) * 1e3), "max_ms": float(max(lags) * 1e3), "probes": len(lags)}


def measure_lag(seconds: float, seed: int, warmup: int) -> dict[str, Any]:
    """The trainer's own effect: the same routing load with no training, then with the background trainer."""
    without = asyncio.run(_lag_while_routing(seconds, seed, warmup, "off"))
    with_bg = asyncio.run(_lag_while_routing(seconds, seed, warmup, "background"))
    return {"seconds": seconds, "fits_during_window": with_bg["fits"], "lag_p50_ms": with_bg["p50_ms"],
            "lag_p99_ms": with_bg["p99_ms"], "lag_max_ms": with_bg["max_ms"],
            "no_training_p50_ms": without["p50_ms"], "no_training_p99_ms": without["p99_ms"]}


def measure_memory(blocks: int, ledger_records: int, seed: int) -> dict[str, Any]:
    engines = 64
    per_engine = blocks // engines + 1
    chain_len = min(256, per_engine)
    gc.collect()
    tracemalloc.start()
    index = PrefixIndex(block_tokens=32, default_capacity_blocks=per_engine, max_total_blocks=blocks)
    base = tracemalloc.get_traced_memory()[0]
    rng = random.Random(seed)
    h = rng.getrandbits(62)
    for i in range(blocks):
        # Distinct chained hashes in prompt-sized chains: the same structures insert() builds from text.
        if i % chain_len == 0:
            chain = []
        h = (h * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        chain.append(h)
        if len(chain) == chain_len or i == blocks - 1:
            index.insert(f"http://engine-{(i // chain_len) % engines}:8000", chain, now=float(i))
    index_bytes = tracemalloc.get_traced_memory()[0] - base
    ledger = Ledger(max_records=ledger_records)
    base = tracemalloc.get_traced_memory()[0]
    feats = np.zeros(28)
    for i in range(ledger.max_records):
        ledger.dispatch(DecisionRecord(f"req-{i:08d}", f"http://engine-{i % engines}:8000", 0.0, "model", "model v1",
                                       1000, 600, 128, 0, 0.1, 0.1, feats.copy(), "x", 0.1))
    ledger_bytes = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return {"index_blocks": len(index), "index_mib": index_bytes / 2**20, "bytes_per_block": index_bytes / max(len(index), 1),
            "ledger_records": len(ledger), "ledger_mib": ledger_bytes / 2**20,
            "bytes_per_record": ledger_bytes / max(len(ledger), 1)}


def run(args: argparse.Namespace) -> int:
    counts = [int(c) for c in str(args.instances).split(",") if c.strip()]
    if not counts or any(c <= 0 for c in counts) or min(args.decisions, args.blocks, args.ledger_records) <= 0 \
            or args.warmup < 100:
        raise SystemExit("bench-overhead: --instances, --decisions, --blocks and --ledger-records must be positive "
                         "and --warmup >= 100")
    results: dict[str, Any] = {"decision": [], "lag": None, "memory": None}
    targets = {8: 300.0, 64: 1000.0}
    for n in counts:
        print(f"[1/3] timing {args.decisions} decisions at {n} instances ...", flush=True)
        results["decision"].append(measure_decisions(n, args.decisions, args.seed, args.warmup))
    print(f"[2/3] event-loop lag for {args.lag_seconds:.0f} s while the background trainer refits ...", flush=True)
    results["lag"] = measure_lag(args.lag_seconds, args.seed, args.warmup)
    print(f"[3/3] memory at {args.blocks} prefix-index blocks and a full ledger ...", flush=True)
    results["memory"] = measure_memory(args.blocks, args.ledger_records, args.seed)

    print("\n| instances | decision p50 us | p99 us | mean us | target p99 | paths |")
    print("|---|---|---|---|---|---|")
    for r in results["decision"]:
        target = targets.get(r["instances"])
        target_text = f"<= {target:.0f}" if target else "-"
        print(f"| {r['instances']} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | {r['mean_us']:.0f} | "
              f"{target_text} | {r['paths']} |")
    lag = results["lag"]
    print("\n| event-loop lag, routing on the loop | p50 ms | p99 ms | max ms | same without training p50 / p99 ms "
          "| fits in window |")
    print("|---|---|---|---|---|---|")
    print(f"| 1 ms ticker, {lag['seconds']:.0f} s, background trainer | {lag['lag_p50_ms']:.3f} | "
          f"{lag['lag_p99_ms']:.3f} | {lag['lag_max_ms']:.2f} | {lag['no_training_p50_ms']:.3f} / "
          f"{lag['no_training_p99_ms']:.3f} | {lag['fits_during_window']} |")
    mem = results["memory"]
    print("\n| structure | entries | MiB | bytes per entry |")
    print("|---|---|---|---|")
    print(f"| prefix index | {mem['index_blocks']} blocks | {mem['index_mib']:.1f} | {mem['bytes_per_block']:.0f} |")
    print(f"| ledger (at cap) | {mem['ledger_records']} records | {mem['ledger_mib']:.1f} | "
          f"{mem['bytes_per_record']:.0f} |")
    if args.out:
        _write(Path(args.out), results)
    return 0


def _write(out: Path, results: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    compact = {**results, "decision": [{k: v for k, v in r.items() if k != "samples_us"} for r in results["decision"]]}
    (out / "results.json").write_text(json.dumps(compact, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"wrote {out / 'results.json'} (matplotlib absent: no plot)")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results["decision"]:
        xs = sorted(r["samples_us"])
        ax.plot(xs, [i / len(xs) for i in range(len(xs))], label=f"{r['instances']} instances")
    ax.set_xscale("log")
    ax.set_xlabel("decision latency (us)")
    ax.set_ylabel("CDF")
    ax.set_title("learned router: one routing decision")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "overhead.png", dpi=120)
    print(f"wrote {out / 'results.json'} and {out / 'overhead.png'}")
