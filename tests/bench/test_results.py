"""The figures in results.json, computed from hand-made records."""

from __future__ import annotations

import json
import math

import pytest

from lodestar_vllm.bench.results import json_safe, summarise, timeline
from lodestar_vllm.core.types import OutcomeStatus
from lodestar_vllm.sim.cluster import InstanceSummary, RequestRecord, SimResult


def _rec(rid: str, arrival: float, ttft: float, e2e: float, inst: str, prompt: int = 100, out: int = 11,
         cached: int = 0, ok: bool = True) -> RequestRecord:
    rec = RequestRecord(rid, arrival, prompt, out, None, instance=inst, dispatched_at=arrival, cached_tokens=cached)
    if ok:
        rec.first_token_at, rec.finished_at, rec.status = arrival + ttft, arrival + e2e, OutcomeStatus.OK
    else:
        rec.status = OutcomeStatus.FAILED
    return rec


def _inst(name: str, preemptions: int) -> InstanceSummary:
    return InstanceSummary(name, f"http://{name}:8000", "L4", 0, preemptions, 0, 0, 0.0, None)


def test_summary_figures() -> None:
    records = [
        _rec("a", 0.0, 1.0, 2.0, "x", cached=50),
        _rec("b", 10.0, 3.0, 4.0, "y"),
        _rec("c", 40.0, 2.0, 12.0, "x", cached=25),
        _rec("d", 45.0, 0.0, 0.0, "y", ok=False),
    ]
    result = SimResult(records, [_inst("x", 2), _inst("y", 1)], end_time=57.0, policy_errors=0, shares=0, steps=9)
    s = summarise(result, wall_s=0.5, policy_stats={"loss": float("nan"), "n": 3})
    assert s["ttft_mean_s"] == pytest.approx(2.0)
    assert s["ttft_p50_s"] == pytest.approx(2.0)
    assert s["e2e_mean_s"] == pytest.approx(6.0)
    assert s["tpot_mean_s"] == pytest.approx((0.1 + 0.1 + 1.0) / 3)  # (e2e - ttft) / (11 - 1)
    assert s["completed"] == 3 and s["failed"] == 1 and s["requests"] == 4
    assert s["prefix_hit_rate"] == pytest.approx(75 / 300)
    assert s["preemptions"] == 3
    assert s["throughput_tok_s"] == pytest.approx(33 / 52.0)  # 3 x 11 tokens from t=0 to the last finish
    assert s["per_instance_share"] == {"x": 0.5, "y": 0.5}
    assert s["ttft_first_60s_mean_s"] == pytest.approx(2.0)
    assert s["ttft_cdf"]["ttft_s"][0] == 1.0 and s["ttft_cdf"]["ttft_s"][-1] == 3.0
    assert s["policy_stats"] == {"loss": None, "n": 3}
    json.dumps(s, allow_nan=False)  # strict JSON


def test_timeline_windows_by_arrival() -> None:
    records = [_rec("a", 1.0, 1.0, 2.0, "x"), _rec("b", 29.0, 3.0, 4.0, "x"), _rec("c", 95.0, 5.0, 6.0, "x")]
    tl = timeline(records, 30.0)
    assert [(w["t_s"], w["requests"]) for w in tl] == [(0.0, 2), (90.0, 1)]
    assert tl[0]["ttft_mean_s"] == pytest.approx(2.0) and tl[1]["ttft_p99_s"] == pytest.approx(5.0)


def test_json_safe() -> None:
    assert json_safe({"a": (1, math.inf), 2: object.__name__}) == {"a": [1, None], "2": "object"}
