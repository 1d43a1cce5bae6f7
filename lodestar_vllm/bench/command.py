"""``lodestar-vllm bench``: policies x cluster x workload in virtual time -> results.json, report.md, plots."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lodestar_vllm.bench.presets import cluster_names
from lodestar_vllm.bench.report import policy_section, write_report
from lodestar_vllm.bench.results import SCHEMA_VERSION, write_results
from lodestar_vllm.bench.runner import ORACLE, available_policies, is_heuristic, run_policies
from lodestar_vllm.bench.scenario import Scenario, ScenarioError
from lodestar_vllm.sim.cluster import EngineFactory, default_engine_factory

DEFAULT_POLICIES = ("learned", "aibrix-prefix-load", "llmd-default", "cache-aware", "dynamo-cost",
                    "least-request", "roundrobin", ORACLE)
TARGET_HEURISTICS = ("aibrix-prefix-load", "llmd-default", "cache-aware", "dynamo-cost", "least-request")

# --sweep parameter -> Scenario field
SWEEPABLE = {"rate-scale": "rate_scale", "scrape-interval": "scrape_interval_s",
             "scrape-staleness": "scrape_staleness_s", "replicas": "replicas"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", required=True, help=f"cluster YAML file or preset: {', '.join(cluster_names())}")
    parser.add_argument("--workload", required=True, help="workload name or file (see `lodestar-vllm workload`)")
    parser.add_argument("--policies", default=None,
                        help=f"comma-separated policy names (default: those of {','.join(DEFAULT_POLICIES)} that "
                             "exist); `all` for every registered policy")
    parser.add_argument("--rate-scale", type=float, default=1.0, help="arrival rate multiplier (>1: more load)")
    parser.add_argument("--duration", type=float, default=None, help="keep arrivals in the first S seconds")
    parser.add_argument("--max-requests", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jitter", type=float, default=None, help="arrival-time noise in s (default: workload's)")
    parser.add_argument("--sweep", default=None, metavar="PARAM=V1,V2,...",
                        help=f"run every value of one parameter ({', '.join(SWEEPABLE)}), e.g. rate-scale=0.5,1,1.5")
    parser.add_argument("--scrape-interval", type=float, default=1.0, help="router's /metrics scrape period, s")
    parser.add_argument("--scrape-staleness", type=float, default=0.0, help="extra delay before a scrape is seen")
    parser.add_argument("--hide-hardware", action="store_true", help="do not tell routers the GPU class")
    parser.add_argument("--net-delay", type=float, default=0.0, help="one-way router<->engine delay, s")
    parser.add_argument("--replicas", type=int, default=1, help="router replicas (one policy instance each)")
    parser.add_argument("--replica-split", choices=("session", "roundrobin"), default="session")
    parser.add_argument("--share-interval", type=float, default=None,
                        help="replicas share the learned model every S seconds (replica 0 publishes)")
    parser.add_argument("--warm-start", default=None, metavar="CKPT", help="load this checkpoint into learned first")
    parser.add_argument("--save-checkpoint", default=None, metavar="PATH", help="save learned's checkpoint after")
    parser.add_argument("--jobs", type=int, default=2, help="policy runs in parallel processes")
    parser.add_argument("--target-load", type=float, default=None, metavar="FACTOR",
                        help="instead of a benchmark: find the rate scale where the best heuristic's mean TTFT is "
                             "FACTOR x its idle TTFT (starts from --rate-scale)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", required=True, help="output directory")


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    if args.rate_scale <= 0:
        raise ScenarioError("--rate-scale must be > 0")
    if args.jobs < 1:
        raise ScenarioError("--jobs must be >= 1")
    return Scenario(
        cluster=args.cluster, workload=args.workload, seed=args.seed, rate_scale=args.rate_scale,
        duration=args.duration, max_requests=args.max_requests, jitter=args.jitter,
        scrape_interval_s=args.scrape_interval, scrape_staleness_s=args.scrape_staleness,
        hide_hardware=args.hide_hardware, net_delay_s=args.net_delay, replicas=args.replicas,
        replica_split=args.replica_split, share_interval_s=args.share_interval,
    )


def resolve_policies(spec: str | None) -> list[str]:
    known = available_policies()
    if spec is None:
        chosen = [p for p in DEFAULT_POLICIES if p in known]
        missing = [p for p in DEFAULT_POLICIES if p not in known]
        if missing:
            print(f"note: not available (yet), skipped: {', '.join(missing)}", file=sys.stderr)
        return chosen
    if spec.strip() == "all":
        return known
    return [p.strip() for p in spec.split(",") if p.strip()]


def parse_sweep(spec: str) -> tuple[str, list[float]]:
    param, sep, values = spec.partition("=")
    param = param.strip()
    if not sep or param not in SWEEPABLE:
        raise ScenarioError(f"--sweep wants PARAM=V1,V2 with PARAM one of {', '.join(SWEEPABLE)}; got {spec!r}")
    try:
        vals = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise ScenarioError(f"--sweep values must be numbers: {values!r}") from None
    if not vals:
        raise ScenarioError("--sweep needs at least one value")
    return param, vals


def run_benchmark(scenario: Scenario, policies: Sequence[str], *, jobs: int = 2, sweep: str | None = None,
                  warm_start: str | None = None, save_checkpoint: str | None = None,
                  progress: bool = True, engine_factory: EngineFactory = default_engine_factory) -> dict[str, Any]:
    """The results.json document. For a sweep, the top-level ``scenario``/``policies`` are the first point."""
    choice = scenario.load_cluster()  # fail fast on a bad cluster before spawning workers
    fleet = {"instances": [f"{i.name} ({i.gpu})" for i in choice.spec.instances],
             "fleet_changes": [asdict(c) for c in choice.changes]}
    if sweep is None:
        results = run_policies(scenario, policies, jobs=jobs, warm_start=warm_start,
                               save_checkpoint=save_checkpoint, progress=progress, engine_factory=engine_factory)
        return {"version": SCHEMA_VERSION, "scenario": {**scenario.to_dict(), **fleet}, "policies": results}
    param, values = parse_sweep(sweep)
    field = SWEEPABLE[param]
    points = []
    for value in values:
        typed: Any = int(value) if field == "replicas" else value
        point_scenario = scenario.with_(**{field: typed})
        print(f"== {param} = {value:g}", file=sys.stderr)
        results = run_policies(point_scenario, policies, jobs=jobs, warm_start=warm_start, progress=progress,
                               engine_factory=engine_factory)
        points.append({"value": value, "scenario": point_scenario.to_dict(), "policies": results})
    return {"version": SCHEMA_VERSION, "scenario": {**points[0]["scenario"], **fleet},
            "policies": points[0]["policies"],
            "sweep": {"parameter": field, "points": points}}


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:
        scenario = scenario_from_args(args)
        policies = resolve_policies(args.policies)
        if not policies:
            raise ScenarioError("no policy to run")
        if args.warm_start and not Path(args.warm_start).is_file():
            raise ScenarioError(f"--warm-start: checkpoint not found: {args.warm_start}")
        if args.target_load is not None:
            return _target_load(scenario, policies, args, out)
        doc = run_benchmark(scenario, policies, jobs=args.jobs, sweep=args.sweep, warm_start=args.warm_start,
                            save_checkpoint=args.save_checkpoint, progress=not args.no_progress)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_results(out / "results.json", doc)
    report = write_report(out, doc)
    print(policy_section(doc["policies"]))
    print(f"\nwrote {out / 'results.json'} and {report}")
    return 0


def _target_load(scenario: Scenario, policies: Sequence[str], args: argparse.Namespace, out: Path) -> int:
    from lodestar_vllm.bench.target_load import find_target_load

    heuristics = [p for p in policies if is_heuristic(p)] if args.policies else None
    if not heuristics:
        known = set(available_policies())
        heuristics = [p for p in TARGET_HEURISTICS if p in known]
    if not heuristics:
        raise ScenarioError("--target-load needs heuristic policies")
    rate, idle, points = find_target_load(scenario, heuristics, factor=args.target_load, jobs=args.jobs)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"scenario": scenario.to_dict(), "factor": args.target_load, "heuristics": heuristics,
           "idle_ttft_s": idle, "rate_scale": rate, "points": [asdict(p) for p in points]}
    (out / "target_load.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"rate scale {rate:.4f} (wrote {out / 'target_load.json'})")
    return 0
