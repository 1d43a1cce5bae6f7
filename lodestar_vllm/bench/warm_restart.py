"""TTFT in the first minute after a router restart: cold (no checkpoint) vs warm (checkpoint restored).

Protocol, all through ``lodestar-vllm bench`` (so every figure can be re-run by hand from the printed commands):
1. a "before the restart" run of the learned router on one seed, saving its checkpoint (--save-checkpoint);
2. for each evaluation seed (other arrivals and prompts than the training run): the first ``--window`` seconds
   of the workload routed by a fresh learned router, once cold and once restored from that checkpoint
   (--warm-start), plus a heuristic reference.
Writes table.md, results.json and first_minute.png to --out.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

ARMS = ("cold", "warm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", default="mixed-fleet")
    parser.add_argument("--workload", default="prefix-sharing")
    parser.add_argument("--rate-scale", type=float, default=3.0)
    parser.add_argument("--train-duration", type=float, default=300.0, help="seconds of traffic before the restart")
    parser.add_argument("--train-seed", type=int, default=100)
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured after the restart")
    parser.add_argument("--seeds", default="1,2,3", help="evaluation seeds (comma-separated)")
    parser.add_argument("--reference", default="least-request", help="heuristic shown for scale ('' for none)")
    parser.add_argument("--out", required=True)


def _bench(args: argparse.Namespace, *extra: str) -> None:
    cmd = [sys.executable, "-m", "lodestar_vllm.cli", "bench", "--cluster", args.cluster, "--workload", args.workload,
           "--rate-scale", str(args.rate_scale), "--jobs", "1", "--no-progress", *extra]
    print("$ lodestar-vllm " + shlex.join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _stats(path: Path, policy: str) -> dict[str, Any]:
    doc = json.loads(path.read_text())["policies"][policy]
    return {k: doc.get(k) for k in ("ttft_mean_s", "ttft_p90_s", "ttft_p99_s", "completed", "failed",
                                    "decision_paths", "warm_start")}


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "learned.ckpt"
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    _bench(args, "--policies", "learned", "--duration", str(args.train_duration), "--seed", str(args.train_seed),
           "--save-checkpoint", str(ckpt), "--out", str(out / "before-restart"))
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        window = ["--duration", str(args.window), "--seed", str(seed)]
        cold_policies = "learned" + (f",{args.reference}" if args.reference else "")
        _bench(args, "--policies", cold_policies, *window, "--out", str(out / f"cold-{seed}"))
        _bench(args, "--policies", "learned", *window, "--warm-start", str(ckpt), "--out", str(out / f"warm-{seed}"))
        row = {"seed": seed, "cold": _stats(out / f"cold-{seed}" / "results.json", "learned"),
               "warm": _stats(out / f"warm-{seed}" / "results.json", "learned")}
        if not row["warm"]["warm_start"] or not row["warm"]["warm_start"].get("loaded"):
            print(f"warm-restart: the checkpoint was not loaded for seed {seed}", file=sys.stderr)
            return 1
        if args.reference:
            row["reference"] = _stats(out / f"cold-{seed}" / "results.json", args.reference)
        rows.append(row)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    table = render_table(rows, args)
    (out / "table.md").write_text(table + "\n")
    plot(rows, args, out / "first_minute.png")
    print(table)
    print(f"\nwrote {out / 'table.md'}, {out / 'results.json'}, {out / 'first_minute.png'}")
    return 0


def _model_share(stats: dict[str, Any]) -> str:
    paths = stats.get("decision_paths") or {}
    total = sum(paths.values()) or 1
    return f"{(paths.get('model', 0) + paths.get('exploration', 0)) / total:.0%}"


def render_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [f"TTFT in the first {args.window:.0f} s after a restart ({args.cluster}, {args.workload} x{args.rate_scale}; "
             f"checkpoint from {args.train_duration:.0f} s of traffic on seed {args.train_seed})", "",
             "| seed | arm | TTFT mean s | p90 s | p99 s | requests | learned-path share |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        for arm in ARMS:
            s = row[arm]
            lines.append(f"| {row['seed']} | {arm} | {s['ttft_mean_s']:.3f} | {s['ttft_p90_s']:.3f} | "
                         f"{s['ttft_p99_s']:.3f} | {s['completed']} | {_model_share(s)} |")
        if "reference" in row:
            s = row["reference"]
            lines.append(f"| {row['seed']} | {args.reference} | {s['ttft_mean_s']:.3f} | {s['ttft_p90_s']:.3f} | "
                         f"{s['ttft_p99_s']:.3f} | {s['completed']} | - |")
    for key, label in (("ttft_mean_s", "mean"), ("ttft_p99_s", "p99")):
        cold = sum(r["cold"][key] for r in rows) / len(rows)
        warm = sum(r["warm"][key] for r in rows) / len(rows)
        lines.append(f"| all | warm / cold {label} | {warm / cold:.3f} | | | | |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    x = np.arange(len(rows))
    for ax, key, label in ((axes[0], "ttft_mean_s", "TTFT mean (s)"), (axes[1], "ttft_p99_s", "TTFT p99 (s)")):
        for i, arm in enumerate(ARMS):
            ax.bar(x + (i - 0.5) * 0.38, [r[arm][key] for r in rows], 0.38, label=f"learned, {arm}")
        ax.set_xticks(x, [f"seed {r['seed']}" for r in rows])
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle(f"First {args.window:.0f} s after a router restart: cold vs checkpoint ({args.cluster})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lodestar_vllm.bench.warm_restart", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
