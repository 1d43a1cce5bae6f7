"""Same seed, same numbers: with the real engine model and real baselines, in-process and across processes
(Python's per-process hash salt must not leak into results)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lodestar_vllm.bench.command import run_benchmark
from lodestar_vllm.bench.scenario import Scenario

SCENARIO = Scenario(cluster="tiny", workload="prefix-sharing", seed=5, max_requests=60, rate_scale=2.0)
POLICIES = ["aibrix-prefix-load", "oracle-greedy"]
REPO = Path(__file__).resolve().parents[2]


def _fingerprint(doc: dict) -> str:
    pols = {name: {k: v for k, v in res.items() if k not in ("wall_s", "cpu_s")} for name, res in doc["policies"].items()}
    return json.dumps(pols, sort_keys=True)


def test_same_seed_same_results_in_process() -> None:
    a = run_benchmark(SCENARIO, POLICIES, jobs=1, progress=False)
    b = run_benchmark(SCENARIO, POLICIES, jobs=1, progress=False)
    assert a["policies"]["oracle-greedy"]["completed"] == 60
    assert _fingerprint(a) == _fingerprint(b)
    c = run_benchmark(SCENARIO.with_(seed=6), POLICIES, jobs=1, progress=False)
    assert _fingerprint(a) != _fingerprint(c)


def test_same_results_across_processes_with_different_hash_salts() -> None:
    code = (
        "import json, sys; from lodestar_vllm.bench.command import run_benchmark; "
        "from tests.bench.test_determinism import SCENARIO, POLICIES, _fingerprint; "
        "sys.stdout.write(_fingerprint(run_benchmark(SCENARIO, POLICIES, jobs=1, progress=False)))"
    )
    outs = []
    for salt in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": salt}
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300, check=True)
        outs.append(proc.stdout)
    assert outs[0] == outs[1] and outs[0]
