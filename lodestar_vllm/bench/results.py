"""Per-request records of one simulated run -> the figures people compare (results.json schema).

Latencies are client-side: TTFT and e2e from the request's arrival at the router. Failed requests count in
``failed`` and are excluded from latency figures (they have none).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lodestar_vllm.core.types import OutcomeStatus
from lodestar_vllm.sim.cluster import RequestRecord, SimResult

SCHEMA_VERSION = 1
TIMELINE_WINDOW_S = 30.0

# Keys every policy entry of results.json carries (tests check the schema against this).
POLICY_KEYS = (
    "ttft_mean_s", "ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "e2e_mean_s", "e2e_p99_s", "tpot_mean_s",
    "throughput_tok_s", "prefix_hit_rate", "preemptions", "requests", "completed", "failed",
    "per_instance_share", "decision_paths", "ttft_first_60s_mean_s", "ttft_cdf", "timeline", "wall_s",
    "cpu_s", "virtual_s", "engine_steps", "policy_errors", "shares", "policy_stats",
)


def _pct(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if values.size else None


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def ttft_cdf(ttft: np.ndarray, points: int = 201) -> dict[str, list[float]]:
    """The TTFT distribution as quantiles (enough for a CDF plot without keeping every request)."""
    if not ttft.size:
        return {"q": [], "ttft_s": []}
    qs = np.linspace(0.0, 1.0, points)
    return {"q": [float(q) for q in qs], "ttft_s": [float(v) for v in np.quantile(ttft, qs)]}


def timeline(records: Sequence[RequestRecord], window_s: float = TIMELINE_WINDOW_S) -> list[dict[str, Any]]:
    """TTFT mean and p99 per arrival-time window: the learning curve."""
    buckets: dict[int, list[float]] = {}
    for rec in records:
        ttft = rec.ttft
        if rec.status == OutcomeStatus.OK and ttft is not None:
            buckets.setdefault(int(rec.arrival_time // window_s), []).append(ttft)
    out = []
    for idx in sorted(buckets):
        vals = np.asarray(buckets[idx])
        out.append({"t_s": idx * window_s, "requests": int(vals.size), "ttft_mean_s": float(vals.mean()),
                    "ttft_p99_s": float(np.percentile(vals, 99))})
    return out


def summarise(result: SimResult, *, wall_s: float, policy_stats: Mapping[str, Any] | None = None,
              window_s: float = TIMELINE_WINDOW_S) -> dict[str, Any]:
    records = result.records
    ok = [r for r in records if r.status == OutcomeStatus.OK]
    ttft = np.asarray([r.ttft for r in ok], dtype=float)
    e2e = np.asarray([r.e2e for r in ok], dtype=float)
    tpot = np.asarray(
        [(r.finished_at - r.first_token_at) / (r.output_tokens - 1) for r in ok
         if r.output_tokens > 1 and r.finished_at is not None and r.first_token_at is not None],
        dtype=float,
    )
    gen_tokens = sum(r.output_tokens for r in ok)
    prompt_tokens = sum(r.prompt_tokens for r in ok)
    cached = sum(r.cached_tokens for r in ok)
    span = 0.0
    if ok:
        span = max(r.finished_at or 0.0 for r in ok) - min(r.arrival_time for r in records)
    routed: dict[str, int] = {inst.name: 0 for inst in result.instances}
    for rec in records:
        if rec.instance is not None:
            routed[rec.instance] = routed.get(rec.instance, 0) + 1
    total_routed = sum(routed.values()) or 1
    paths: dict[str, int] = {}
    for rec in records:
        if rec.decision_path is not None:
            paths[rec.decision_path] = paths.get(rec.decision_path, 0) + 1
    start = min((r.arrival_time for r in records), default=0.0)
    first_minute = np.asarray([r.ttft for r in ok if r.arrival_time - start < 60.0], dtype=float)
    return {
        "ttft_mean_s": _mean(ttft),
        "ttft_p50_s": _pct(ttft, 50),
        "ttft_p90_s": _pct(ttft, 90),
        "ttft_p99_s": _pct(ttft, 99),
        "e2e_mean_s": _mean(e2e),
        "e2e_p99_s": _pct(e2e, 99),
        "tpot_mean_s": _mean(tpot),
        "throughput_tok_s": gen_tokens / span if span > 0 else 0.0,
        "prefix_hit_rate": cached / prompt_tokens if prompt_tokens else 0.0,
        "preemptions": sum(inst.preemptions for inst in result.instances),
        "requests": len(records),
        "completed": len(ok),
        "failed": sum(1 for r in records if r.status == OutcomeStatus.FAILED),
        "per_instance_share": {name: n / total_routed for name, n in routed.items()},
        "decision_paths": dict(sorted(paths.items())),
        # Cold start vs warm start (checkpoint) shows here.
        "ttft_first_60s_mean_s": _mean(first_minute),
        "ttft_cdf": ttft_cdf(ttft),
        "timeline": timeline(records, window_s),
        "wall_s": wall_s,
        "virtual_s": result.end_time,
        "engine_steps": result.steps,
        "policy_errors": result.policy_errors,
        "shares": result.shares,
        "policy_stats": json_safe(policy_stats) if policy_stats else None,
    }


def json_safe(value: Any) -> Any:
    """Policy stats come from other code: keep what JSON can carry (non-finite floats become None)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.integer):
        return int(value)
    return str(value)


def write_results(path: Path, doc: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(json_safe(doc), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def load_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))
