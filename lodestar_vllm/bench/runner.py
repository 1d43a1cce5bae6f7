"""Run policies on a scenario: one simulated run per policy, in parallel worker processes.

Each run rebuilds the workload and the cluster from the scenario inside its own process (deterministic for a
seed), so runs share nothing and a run's wall time is its own.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lodestar_vllm.bench.results import summarise
from lodestar_vllm.bench.scenario import Scenario, ScenarioError
from lodestar_vllm.policies.base import RoutingPolicy
from lodestar_vllm.policies.registry import create_policy, policy_names
from lodestar_vllm.sim.cluster import ClusterSimulator, EngineFactory, default_engine_factory
from lodestar_vllm.sim.oracle import OracleGreedyPolicy

ORACLE = "oracle-greedy"
LEARNED_PREFIX = "learned"


def is_heuristic(name: str) -> bool:
    """Baselines: everything but the learned router (and its variants) and the oracle."""
    return name != ORACLE and not name.startswith(LEARNED_PREFIX)


def available_policies() -> list[str]:
    return sorted([*policy_names(), ORACLE])


def check_policies(names: Sequence[str]) -> None:
    known = set(available_policies())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ScenarioError(f"unknown policy {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if len(set(names)) != len(names):
        raise ScenarioError("a policy is listed twice")


@dataclass(frozen=True, slots=True)
class RunOptions:
    warm_start: str | None = None  # checkpoint loaded into learned policies before the run
    save_checkpoint: str | None = None  # learned policy's checkpoint written after the run
    progress: bool = True
    progress_position: int = 0
    # Test seam: a stand-in engine (must be a module-level function to cross process boundaries).
    engine_factory: EngineFactory = default_engine_factory


def _make_policy(name: str, seed: int, sim: ClusterSimulator) -> RoutingPolicy:
    if name == ORACLE:
        return OracleGreedyPolicy(sim, seed=seed)
    return create_policy(name, seed=seed)


def _policy_stats(policy: RoutingPolicy) -> dict[str, Any] | None:
    for attr in ("stats", "status"):
        fn = getattr(policy, attr, None)
        if callable(fn):
            try:
                value = fn()
            except Exception as exc:  # stats are a nicety; a failure is reported, never fatal
                return {"error": f"{attr}() raised {type(exc).__name__}: {exc}"}
            if isinstance(value, dict):
                return value
    return None


def run_policy(scenario: Scenario, name: str, options: RunOptions | None = None) -> dict[str, Any]:
    """Simulate ``scenario`` routed by ``name``; returns the policy's results.json entry."""
    options = options or RunOptions()
    requests = scenario.load_requests()
    choice = scenario.load_cluster()
    sim = ClusterSimulator(choice.spec, requests, scenario.sim_config(), scenario.events(choice, requests),
                           options.engine_factory)
    policies = [_make_policy(name, scenario.seed + i, sim) for i in range(scenario.replicas)]
    extras: dict[str, Any] = {}
    if options.warm_start and not is_heuristic(name) and name != ORACLE:
        loaded = [bool(p.load_checkpoint(options.warm_start)) for p in policies if hasattr(p, "load_checkpoint")]
        extras["warm_start"] = {"path": options.warm_start, "loaded": bool(loaded) and all(loaded)}
    bar = None
    if options.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(requests), desc=f"{name:>20}", unit="req", position=options.progress_position,
                   leave=True, mininterval=0.5, file=sys.stderr, dynamic_ncols=True)
    started = time.perf_counter()
    cpu_started = time.process_time()
    try:
        result = sim.run(policies, progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - started
    # CPU seconds of this process: on a shared box wall time also counts other people's work.
    extras["cpu_s"] = time.process_time() - cpu_started
    stats = _policy_stats(policies[0])
    if options.save_checkpoint and hasattr(policies[0], "save_checkpoint"):
        Path(options.save_checkpoint).parent.mkdir(parents=True, exist_ok=True)
        policies[0].save_checkpoint(options.save_checkpoint)
        extras["checkpoint_saved"] = options.save_checkpoint
    for policy in policies:
        policy.close()
    summary = summarise(result, wall_s=wall, policy_stats=stats)
    summary.update(extras)
    return summary


def _run_job(args: tuple[Scenario, str, RunOptions]) -> tuple[str, dict[str, Any]]:
    scenario, name, options = args
    return name, run_policy(scenario, name, options)


def run_policies(scenario: Scenario, names: Sequence[str], *, jobs: int = 2, warm_start: str | None = None,
                 save_checkpoint: str | None = None, progress: bool = True,
                 engine_factory: EngineFactory = default_engine_factory) -> dict[str, dict[str, Any]]:
    """Every policy on the same scenario; results in the order of ``names``."""
    check_policies(names)
    jobs_list = [
        (scenario, name, RunOptions(warm_start, save_checkpoint if not is_heuristic(name) else None,
                                    progress, idx % max(1, jobs), engine_factory))
        for idx, name in enumerate(names)
    ]
    if jobs <= 1 or len(names) == 1:
        out = dict(_run_job(job) for job in jobs_list)
    else:
        # spawn, not fork: a forked child of a process with torch threads can deadlock.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(jobs, len(names)), mp_context=ctx) as pool:
            out = dict(pool.map(_run_job, jobs_list))
    return {name: out[name] for name in names}
