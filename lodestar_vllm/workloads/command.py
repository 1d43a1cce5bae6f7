"""``lodestar-vllm workload``: list the workloads, compare workloads' statistics (table, plot), or export one
as JSONL."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TextIO

from lodestar_vllm.workloads.catalog import CATALOG
from lodestar_vllm.workloads.load import load_workload
from lodestar_vllm.workloads.stats import WorkloadStats, workload_stats
from lodestar_vllm.workloads.types import WorkloadRequest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "workloads", nargs="*", metavar="WORKLOAD",
        help="names (see the list without one), name:key=value,..., or trace files; several make a comparison",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate-scale", type=float, default=1.0, help="> 1 compresses time (more load)")
    parser.add_argument("--duration", type=float, default=None, help="keep arrivals before this many seconds")
    parser.add_argument("--max-requests", type=int, default=None)
    parser.add_argument("--jitter", type=float, default=None, help="arrival noise in s (default: the workload's)")
    parser.add_argument("--block-size", type=int, default=64, help="block size for the measured prefix-hit ratio")
    parser.add_argument("--no-sharing", action="store_true", help="skip measuring prefix sharing (it reads all text)")
    parser.add_argument("--json", action="store_true", help="statistics as JSON")
    parser.add_argument("--export", metavar="PATH", help="write the requests as JSONL (- for stdout)")
    parser.add_argument("--text", action="store_true", help="with --export: include each prompt's text")
    parser.add_argument("--plot", metavar="PNG", help="also plot length CDFs and load over time")


def _list(out: TextIO) -> None:
    width = max(map(len, CATALOG))
    for name, entry in CATALOG.items():
        print(f"{name:<{width}}  {entry.description}", file=out)
    print("\nprefix-sharing-<percent> takes any percent; generators take overrides: NAME:key=value,...", file=out)


def export(requests: list[WorkloadRequest], out: TextIO, with_text: bool) -> None:
    """JSONL that ``read_jsonl`` reads back (timestamps in seconds)."""
    for r in requests:
        record: dict[str, object] = {
            "request_id": r.request_id,
            "timestamp": r.arrival_time,
            "prompt_tokens": r.prompt_tokens,
            "output_tokens": r.output_tokens,
        }
        if r.session_id is not None:
            record["session_id"] = r.session_id
        if with_text:
            record["prompt"] = r.prompt_text()
        out.write(json.dumps(record) + "\n")


def _load(name: str, args: argparse.Namespace) -> list[WorkloadRequest]:
    started = time.perf_counter()
    requests = load_workload(
        name, seed=args.seed, rate_scale=args.rate_scale, duration=args.duration,
        max_requests=args.max_requests, jitter=args.jitter,
    )
    loaded = time.perf_counter() - started
    if not requests:
        raise ValueError("no requests (duration or max-requests too small?)")
    sample = requests[:: max(1, len(requests) // 500)]
    started = time.perf_counter()
    chars = sum(len(r.prompt_text()) for r in sample)
    per_prompt_us = (time.perf_counter() - started) / len(sample) * 1e6
    print(
        f"{name}: loaded {len(requests)} requests in {loaded:.2f} s; prompt text {per_prompt_us:.0f} us per "
        f"prompt (mean {chars / 4 / len(sample):.0f} tokens, {len(sample)} sampled)",
        file=sys.stderr,
    )
    return requests


def _table(names: list[str], stats: list[WorkloadStats]) -> str:
    rows = ["| statistic | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in stats[0].as_dict():
        cells = []
        for s in stats:
            value = s.as_dict()[key]
            cells.append("n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value))
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    if not args.workloads:
        _list(sys.stdout)
        return 0
    if args.export and len(args.workloads) != 1:
        print("lodestar-vllm workload: --export takes exactly one workload", file=sys.stderr)
        return 2
    try:
        loaded = {name: _load(name, args) for name in args.workloads}
    except (ValueError, OSError) as exc:
        print(f"lodestar-vllm workload: {exc}", file=sys.stderr)
        return 2
    if args.export:
        (requests,) = loaded.values()
        if args.export == "-":
            export(requests, sys.stdout, args.text)
        else:
            with Path(args.export).open("w", encoding="utf-8") as fh:
                export(requests, fh, args.text)
            print(f"wrote {len(requests)} requests to {args.export}", file=sys.stderr)
        return 0
    stats = []
    for name, requests in loaded.items():
        if not args.no_sharing:
            print(f"{name}: measuring prefix sharing over {len(requests)} prompts...", file=sys.stderr)
        stats.append(workload_stats(requests, block_size=args.block_size, measure_sharing=not args.no_sharing))
    if args.json:
        print(json.dumps({name: s.as_dict() for name, s in zip(loaded, stats, strict=True)}, indent=2))
    else:
        print(f"seed {args.seed}, rate scale {args.rate_scale}, prefix hits on {args.block_size}-token blocks")
        print(_table(list(loaded), stats))
    if args.plot:
        from lodestar_vllm.workloads.plot import plot_workloads

        plot_workloads(loaded, Path(args.plot))
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
