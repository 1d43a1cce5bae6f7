"""``lodestar-vllm demo`` (what ``make demo`` runs): the learned router against the main heuristics and the
oracle on an embedded default scenario (synthetic prefix-sharing load on a mixed GPU fleet), a few minutes on
two cores. Writes results.json, report.md and plots to ./out/demo and prints the table with ratios."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lodestar_vllm.bench.command import run_benchmark
from lodestar_vllm.bench.report import policy_section, write_report
from lodestar_vllm.bench.results import write_results
from lodestar_vllm.bench.runner import ORACLE, available_policies
from lodestar_vllm.bench.scenario import Scenario, ScenarioError

DEMO_POLICIES = ("learned", "aibrix-prefix-load", "llmd-default", "dynamo-cost", "least-request", "roundrobin",
                 ORACLE)
# Heavy enough that routing matters, short enough for a laptop: `bench --target-load 3` on this scenario puts the
# best heuristic's mean TTFT at 2.5x its idle TTFT at rate scale 3.08 and 4.1x at 3.36 (docs/benchmark.md).
DEMO_SCENARIO = Scenario(cluster="mixed-fleet", workload="prefix-sharing", seed=0, rate_scale=3.2, duration=180.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", help="output directory (default: out/demo)")
    parser.add_argument("--jobs", type=int, default=2, help="policy runs in parallel processes")
    parser.add_argument("--duration", type=float, default=DEMO_SCENARIO.duration, help="seconds of arrivals")
    parser.add_argument("--rate-scale", type=float, default=DEMO_SCENARIO.rate_scale)
    parser.add_argument("--seed", type=int, default=DEMO_SCENARIO.seed)
    parser.add_argument("--policies", default=None, help=f"comma-separated (default: {','.join(DEMO_POLICIES)})")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    known = set(available_policies())
    if args.policies:
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    else:
        policies = [p for p in DEMO_POLICIES if p in known]
        missing = [p for p in DEMO_POLICIES if p not in known]
        if missing:
            print(f"note: not available, skipped: {', '.join(missing)}", file=sys.stderr)
    scenario = DEMO_SCENARIO.with_(duration=args.duration, rate_scale=args.rate_scale, seed=args.seed)
    print(f"demo: {scenario.workload} on {scenario.cluster}, rate scale {scenario.rate_scale:g}, "
          f"{scenario.duration:g} s of arrivals, policies: {', '.join(policies)}", file=sys.stderr)
    try:
        doc = run_benchmark(scenario, policies, jobs=args.jobs, progress=not args.no_progress)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    write_results(out / "results.json", doc)
    report = write_report(out, doc)
    print(policy_section(doc["policies"]))
    print(f"\nwrote {out / 'results.json'}, {report} and plots")
    return 0
