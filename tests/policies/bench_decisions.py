"""Decision cost of every baseline on a real trace, without the engine model: ``python -m tests.policies.bench_decisions``.

Replays a workload's requests (text, sessions) against N static candidates; each request ends ``--concurrency``
requests after it starts, so in-flight counters and indexes see a realistic churn. Prints a table of wall time
per policy and per decision, and the size of each policy's biggest structure at the end (bounded memory).
Not collected by pytest (no ``test_`` prefix): it measures speed, which tests never assert.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque

from lodestar_vllm.core.types import EngineMetrics, InstanceView, Outcome, OutcomeStatus, RequestInfo
from lodestar_vllm.policies.registry import POLICIES, create_policy, policy_names
from lodestar_vllm.workloads import load_workload


def structure_size(policy: object) -> str:
    for attr, measure in (("index", "size"), ("trie", "__len__"), ("tree", "node_count")):
        obj = getattr(policy, attr, None)
        if obj is not None:
            value = getattr(obj, measure, None)
            count = value() if callable(value) else len(obj)
            return f"{attr}={count}"
    return "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="mooncake-conversation")
    parser.add_argument("--max-requests", type=int, default=12000)
    parser.add_argument("--instances", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--policies", default="")
    args = parser.parse_args(argv)

    requests = load_workload(args.workload, seed=0, max_requests=args.max_requests)
    infos = [RequestInfo(r.request_id, "model", r.prompt_text(), r.arrival_time, prompt_tokens=r.prompt_tokens,
                         session_id=r.session_id) for r in requests]
    chars = sum(len(i.prompt_text) for i in infos) / len(infos)
    print(f"{args.workload}: {len(infos)} requests, mean prompt {chars / 1000:.1f} KB, {args.instances} instances",
          flush=True)
    candidates = [InstanceView(f"http://engine-{k}:8000", EngineMetrics(scraped_at=0.0, kv_cache_usage=0.05 * k,
                                                                         num_waiting=k % 3, block_size=16,
                                                                         num_gpu_blocks=30000))
                  for k in range(args.instances)]
    names = [n for n in args.policies.split(",") if n] or sorted(
        n for n in policy_names() if POLICIES[n].startswith("lodestar_vllm.policies.heuristics"))
    # CPU time is the figure to compare on a shared machine; wall time includes waiting for a core.
    print(f"{'policy':<20} {'wall s':>8} {'cpu s':>8} {'cpu ms/dec':>12}  structure", flush=True)
    for name in names:
        policy = create_policy(name, seed=0)
        live: deque[tuple[str, str]] = deque()
        started, cpu_started = time.perf_counter(), time.process_time()
        for info in infos:
            now = info.arrival_time
            decision = policy.route(info, candidates, now)
            policy.on_first_token(info.request_id, decision.url, now)
            live.append((info.request_id, decision.url))
            if len(live) > args.concurrency:
                rid, url = live.popleft()
                policy.on_outcome(Outcome(rid, url, now, OutcomeStatus.OK, first_token_at=now, finished_at=now))
        total, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        print(f"{name:<20} {total:8.2f} {cpu:8.2f} {cpu / len(infos) * 1e3:12.3f}  {structure_size(policy)}",
              flush=True)
        policy.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
