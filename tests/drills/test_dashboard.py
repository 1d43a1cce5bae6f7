"""The Grafana dashboard: only lodestar_ metrics that exist, PromQL the renderer evaluates correctly, and panels
that show data when fed the adapter's real /metrics."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import httpx
import pytest

from lodestar_vllm.bench.dashboard_render import (
    ExprError,
    SeriesStore,
    bucket_quantile,
    evaluate,
    lodestar_samples,
    metric_names,
    parse,
    render,
)
from lodestar_vllm.metrics import lodestar_metrics
from tests.drills.conftest import FAST_LEARNED, completion, engines, router, wait_for

DASHBOARD = Path(__file__).resolve().parents[2] / "helm-values" / "grafana-dashboard.json"


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _exported_names() -> set[str]:
    return {c._name for c in vars(lodestar_metrics()).values()}  # noqa: SLF001 - collector names


def test_dashboard_reads_only_existing_lodestar_metrics() -> None:
    exported = _exported_names()
    used: set[str] = set()
    for panel in _dashboard()["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= metric_names(parse(target["expr"]))
    assert used <= exported, used - exported
    assert all(name.startswith("lodestar_") for name in used)
    assert len(used) >= 15  # the dashboard covers the learner, not a token panel


def _store(series: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]]) -> SeriesStore:
    times = sorted({t for points in series.values() for t, _ in points})
    return SeriesStore({(n, frozenset(labels)): points for (n, labels), points in series.items()}, times)


def test_rate_sum_by_and_counter_reset() -> None:
    store = _store({
        ("c_total", (("path", "model"),)): [(0, 0), (10, 50), (20, 100)],
        ("c_total", (("path", "fallback"),)): [(0, 10), (10, 20), (20, 5)],  # reset after 20: +5
    })
    by_path = evaluate(parse("sum by (path) (rate(c_total[1m]))"), store, 20)
    # model: +100 over the 20 s of samples; its series starts at 0, so no extrapolation before it; / 60 s
    assert by_path[frozenset({("path", "model")})] == pytest.approx(100 / 60)
    # fallback: +10 then +5 after the reset = 15 over 20 s, extrapolated by half an interval (5 s) at the start
    assert by_path[frozenset({("path", "fallback")})] == pytest.approx(15 * 25 / 20 / 60)
    # (0, 20] holds the samples at 10 and 20: +50 and +5 (reset) over 10 s, extrapolated to the 20 s window
    assert evaluate(parse("sum(increase(c_total[20s]))"), store, 20) == {frozenset(): pytest.approx(110.0)}


def test_histogram_quantile_matches_prometheus_interpolation() -> None:
    buckets = [(0.1, 10.0), (0.2, 60.0), (0.5, 90.0), (math.inf, 100.0)]
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.1 + 0.1 * (50 - 10) / 50)
    assert bucket_quantile(0.99, buckets) == 0.5  # in +Inf: the highest finite bound
    assert math.isnan(bucket_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))


@pytest.mark.parametrize("expr", ["rate(x)", "avg(x)", "x > 1", "topk(3, x)", "x{a=~\"b\"}", "sum by (a) x"])
def test_unsupported_promql_is_refused(expr: str) -> None:
    with pytest.raises(ExprError):
        evaluate(parse(expr), _store({}), 0)


@pytest.mark.slow
def test_panels_show_data_from_the_adapters_real_metrics(tmp_path: Path) -> None:
    """Scrape the stand-in host's /metrics (the adapter's collectors) while traffic flows, then evaluate and
    render the dashboard: the core panels must have data and the PNG must be written."""
    scrapes: list[dict] = []
    with engines(2) as es, router([e.url for e in es], options=FAST_LEARNED) as r:
        with httpx.Client(base_url=r.url, timeout=30) as client:
            started = time.monotonic()
            for i in range(90):
                assert client.post("/v1/completions", json=completion(f"dash {i} " * 20)).status_code == 200
                if i % 15 == 0:
                    scrapes.append({"t": time.monotonic() - started,
                                    "samples": lodestar_samples(client.get("/metrics").text)})
            wait_for(lambda: r.runtime.policy.model is not None, 60, "a first model")
            scrapes.append({"t": time.monotonic() - started, "samples": lodestar_samples(client.get("/metrics").text)})
    path = tmp_path / "samples.jsonl"
    path.write_text("\n".join(json.dumps(s) for s in scrapes))
    store = SeriesStore.from_jsonl(path)
    t = store.times[-1]
    decisions = evaluate(parse("sum by (path) (rate(lodestar_decisions_total[1m]))"), store, t)
    assert sum(decisions.values()) > 0 and frozenset({("path", "fallback")}) in decisions
    latency = evaluate(parse("histogram_quantile(0.99, sum by (le) (rate(lodestar_decision_latency_seconds_bucket"
                             "[1m])))"), store, t)
    assert 0 < latency[frozenset()] < 0.05
    assert evaluate(parse("max(lodestar_model_version)"), store, t)[frozenset()] >= 1
    panels_with_data = render(_dashboard(), store, tmp_path / "dash.png")
    assert panels_with_data >= 10 and (tmp_path / "dash.png").stat().st_size > 10_000
