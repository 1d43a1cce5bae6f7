"""``lodestar-vllm workload``: list the workloads, show a workload's statistics, or export it as JSONL."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TextIO

from lodestar_vllm.workloads.catalog import CATALOG
from lodestar_vllm.workloads.load import load_workload
from lodestar_vllm.workloads.stats import workload_stats
from lodestar_vllm.workloads.types import WorkloadRequest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", nargs="?", help="a name (see the list without it), name:key=value,..., or a trace file")
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


def run(args: argparse.Namespace) -> int:
    if not args.workload:
        _list(sys.stdout)
        return 0
    started = time.perf_counter()
    try:
        requests = load_workload(
            args.workload, seed=args.seed, rate_scale=args.rate_scale, duration=args.duration,
            max_requests=args.max_requests, jitter=args.jitter,
        )
    except (ValueError, OSError) as exc:
        print(f"lodestar-vllm workload: {exc}", file=sys.stderr)
        return 2
    if not requests:
        print("lodestar-vllm workload: no requests (duration or max-requests too small?)", file=sys.stderr)
        return 1
    if args.export:
        if args.export == "-":
            export(requests, sys.stdout, args.text)
        else:
            with Path(args.export).open("w", encoding="utf-8") as fh:
                export(requests, fh, args.text)
            print(f"wrote {len(requests)} requests to {args.export}", file=sys.stderr)
        return 0
    loaded = time.perf_counter() - started
    sample = requests[:: max(1, len(requests) // 500)]
    started = time.perf_counter()
    chars = sum(len(r.prompt_text()) for r in sample)
    per_prompt_us = (time.perf_counter() - started) / len(sample) * 1e6
    print(
        f"loaded {len(requests)} requests in {loaded:.2f} s; prompt text {per_prompt_us:.0f} us per prompt "
        f"(mean {chars / 4 / len(sample):.0f} tokens, {len(sample)} sampled)",
        file=sys.stderr,
    )
    if not args.no_sharing:
        print(f"measuring prefix sharing over {len(requests)} prompts...", file=sys.stderr)
    stats = workload_stats(requests, block_size=args.block_size, measure_sharing=not args.no_sharing)
    if args.json:
        print(json.dumps({"workload": args.workload, **stats.as_dict()}, indent=2))
        return 0
    print(f"workload {args.workload} (seed {args.seed}, rate scale {args.rate_scale})")
    print("| statistic | value |\n|---|---|")
    for key, value in stats.as_dict().items():
        shown = "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"| {key} | {shown} |")
    return 0
