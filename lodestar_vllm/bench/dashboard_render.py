"""Render the Grafana dashboard (helm-values/grafana-dashboard.json) to PNG from real scraped metric samples.

Grafana is not installable here (not on PyPI, Debian or npm), so this draws each panel of the dashboard JSON with
matplotlib, evaluating the panel's PromQL itself. Only the PromQL the dashboard uses is understood, and anything
else is refused with an error rather than drawn wrong:

    name{label="v",...}                      instant selector (gauges)
    rate(sel[5m]) / increase(sel[1h])        per-series, from the first and last sample inside the window
    sum|max|min [by (l1, l2)] (expr)         aggregation
    histogram_quantile(q, expr)              over ``le`` buckets, linear inside a bucket as Prometheus does

Two steps:

    capture  run the REAL production-stack router (``lodestar-vllm-router``) with the learned logic in front of
             emulated engines on loopback, replay a workload, and scrape the router's /metrics every
             ``--interval`` seconds into a JSONL file (one line per scrape, lodestar_* samples only). Needs the
             router's environment (docs/production-stack.md), like the e2e script it reuses.
    render   samples + dashboard JSON -> one PNG, panels laid out by their gridPos.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Labels = frozenset[tuple[str, str]]
Vector = dict[Labels, float]
PREFIX = "lodestar_"
_DURATION = {"s": 1.0, "m": 60.0, "h": 3600.0}


class ExprError(ValueError):
    """A PromQL expression outside the subset this renderer evaluates."""


# --- samples ------------------------------------------------------------------------------------------------
@dataclass
class SeriesStore:
    """Every scraped sample: (metric name, labels) -> [(t, value)], t in seconds from the capture start."""

    series: dict[tuple[str, Labels], list[tuple[float, float]]]
    times: list[float]

    @classmethod
    def from_jsonl(cls, path: Path) -> SeriesStore:
        series: dict[tuple[str, Labels], list[tuple[float, float]]] = {}
        times: list[float] = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                scrape = json.loads(line)
                t = float(scrape["t"])
                samples = scrape["samples"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{n}: not a capture line ({exc})") from None
            times.append(t)
            for name, labels, value in samples:
                series.setdefault((name, frozenset(labels.items())), []).append((t, float(value)))
        if not times:
            raise ValueError(f"{path}: no samples")
        return cls(series, times)

    def select(self, name: str, matchers: Mapping[str, str]) -> dict[Labels, list[tuple[float, float]]]:
        return {labels: points for (n, labels), points in self.series.items()
                if n == name and all(dict(labels).get(k) == v for k, v in matchers.items())}


def lodestar_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text) if family.name.startswith(PREFIX)
            for s in family.samples]


# --- the PromQL subset -----------------------------------------------------------------------------------------
_TOKEN = re.compile(r'\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)|(?P<str>"[^"]*")'
                    r'|(?P<range>\[\d+[smh]\])|(?P<op>[(){},=]))')


def _tokens(expr: str) -> list[str]:
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise ExprError(f"cannot parse {expr!r} at {expr[pos:pos + 20]!r}")
        out.append(m.group().strip())
        pos = m.end()
    return out


@dataclass
class Node:
    kind: str  # select | range_fn | agg | quantile
    name: str = ""
    matchers: tuple[tuple[str, str], ...] = ()
    window: float = 0.0
    by: tuple[str, ...] | None = None
    q: float = 0.0
    child: Node | None = None


def parse(expr: str) -> Node:
    tokens = _tokens(expr)
    node, rest = _parse(tokens)
    if rest:
        raise ExprError(f"unexpected {' '.join(rest)!r} in {expr!r}")
    return node


def _expect(tokens: list[str], token: str) -> list[str]:
    if not tokens or tokens[0] != token:
        raise ExprError(f"expected {token!r}, got {tokens[:1]}")
    return tokens[1:]


def _parse(tokens: list[str]) -> tuple[Node, list[str]]:
    if not tokens:
        raise ExprError("empty expression")
    head, rest = tokens[0], tokens[1:]
    if head in ("rate", "increase"):
        rest = _expect(rest, "(")
        sel, rest = _selector(rest)
        if not rest or not rest[0].startswith("["):
            raise ExprError(f"{head}() needs a range selector like [5m]")
        window = float(rest[0][1:-2]) * _DURATION[rest[0][-2]]
        rest = _expect(rest[1:], ")")
        return Node("range_fn", name=head, window=window, child=sel), rest
    if head in ("sum", "max", "min"):
        by: tuple[str, ...] | None = None
        if rest and rest[0] == "by":
            rest = _expect(rest[1:], "(")
            labels: list[str] = []
            while rest and rest[0] != ")":
                if rest[0] != ",":
                    labels.append(rest[0])
                rest = rest[1:]
            rest, by = _expect(rest, ")"), tuple(labels)
        rest = _expect(rest, "(")
        child, rest = _parse(rest)
        return Node("agg", name=head, by=by, child=child), _expect(rest, ")")
    if head == "histogram_quantile":
        rest = _expect(rest, "(")
        try:
            q = float(rest[0])
        except (IndexError, ValueError):
            raise ExprError("histogram_quantile needs a number first") from None
        child, rest = _parse(_expect(rest[1:], ","))
        return Node("quantile", q=q, child=child), _expect(rest, ")")
    return _selector(tokens)


def _selector(tokens: list[str]) -> tuple[Node, list[str]]:
    name, rest = tokens[0], tokens[1:]
    if not re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", name):
        raise ExprError(f"expected a metric name, got {name!r}")
    matchers: list[tuple[str, str]] = []
    if rest and rest[0] == "{":
        rest = rest[1:]
        while rest and rest[0] != "}":
            if rest[0] == ",":
                rest = rest[1:]
                continue
            if len(rest) < 3 or rest[1] != "=" or not rest[2].startswith('"'):
                raise ExprError(f"only label=\"value\" matchers are supported, got {rest[:3]}")
            matchers.append((rest[0], rest[2].strip('"')))
            rest = rest[3:]
        rest = _expect(rest, "}")
    return Node("select", name=name, matchers=tuple(matchers)), rest


def metric_names(node: Node) -> set[str]:
    """The metric names an expression reads (``_bucket`` etc. stripped to the family name)."""
    if node.kind == "select":
        return {re.sub(r"_(bucket|count|sum|total)$", "", node.name)}
    return metric_names(node.child) if node.child is not None else set()


def evaluate(node: Node, store: SeriesStore, t: float) -> Vector:
    if node.kind == "select":
        out: Vector = {}
        for labels, points in store.select(node.name, dict(node.matchers)).items():
            last = [v for ts, v in points if ts <= t]
            if last:
                out[labels] = last[-1]
        return out
    if node.kind == "range_fn":
        assert node.child is not None
        out = {}
        for labels, points in store.select(node.child.name, dict(node.child.matchers)).items():
            inside = [(ts, v) for ts, v in points if t - node.window < ts <= t]
            growth = extrapolated_increase(inside, t - node.window, t)
            if growth is not None:
                out[labels] = growth / node.window if node.name == "rate" else growth
        return out
    if node.kind == "agg":
        assert node.child is not None
        groups: dict[Labels, list[float]] = {}
        for labels, value in evaluate(node.child, store, t).items():
            key = frozenset((k, v) for k, v in labels if node.by is not None and k in node.by)
            groups.setdefault(key, []).append(value)
        fn = {"sum": sum, "max": max, "min": min}[node.name]
        return {key: float(fn(values)) for key, values in groups.items()}
    assert node.kind == "quantile" and node.child is not None
    buckets: dict[Labels, list[tuple[float, float]]] = {}
    for labels, value in evaluate(node.child, store, t).items():
        d = dict(labels)
        if "le" not in d:
            continue
        key = frozenset((k, v) for k, v in labels if k != "le")
        buckets.setdefault(key, []).append((float(d["le"]), value))
    return {key: q for key, b in buckets.items() if not math.isnan(q := bucket_quantile(node.q, sorted(b)))}


def extrapolated_increase(points: Sequence[tuple[float, float]], start: float, end: float) -> float | None:
    """A counter's increase over [start, end] from the samples inside it, as Prometheus' ``increase`` computes
    it: resets count from zero, and the growth is extrapolated towards the window edges, but by at most half a
    sample interval where the series starts or stops inside the window, and never below a counter value of 0."""
    if len(points) < 2:
        return None
    growth = sum(b - a if b >= a else b for (_, a), (_, b) in zip(points, points[1:], strict=False))
    span = points[-1][0] - points[0][0]
    if span <= 0:
        return None
    average = span / (len(points) - 1)
    to_start, to_end = points[0][0] - start, end - points[-1][0]
    if to_start >= average * 1.1:
        to_start = average / 2
    if to_end >= average * 1.1:
        to_end = average / 2
    if growth > 0 and points[0][1] >= 0:
        to_start = min(to_start, span * points[0][1] / growth)
    return growth * (span + to_start + to_end) / span


def bucket_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile for one series of cumulative (le, count) buckets, sorted by le."""
    if len(buckets) < 2 or buckets[-1][0] != math.inf or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == math.inf:
                return prev_le  # the highest finite bound, as Prometheus returns
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return math.nan


# --- rendering -----------------------------------------------------------------------------------------------
def _legend(fmt: str, labels: Labels) -> str:
    d = dict(labels)
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: d.get(m.group(1), ""), fmt or "") or \
        (",".join(f"{k}={v}" for k, v in sorted(d.items())) or "value")


def render(dashboard: Mapping[str, Any], store: SeriesStore, out: Path, title_note: str = "") -> int:
    """Draw every panel; returns how many panels had data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    panels = sorted(dashboard.get("panels", []), key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(22, rows * 0.55), facecolor="#111217")
    grid = GridSpec(rows, 24, figure=fig, hspace=1.6, wspace=1.2, left=0.03, right=0.99, top=0.96, bottom=0.02)
    fig.suptitle(f"{dashboard.get('title', 'dashboard')} {title_note}", color="white", fontsize=14)
    times = store.times
    with_data = 0
    for panel in panels:
        g = panel["gridPos"]
        ax = fig.add_subplot(grid[g["y"]:g["y"] + g["h"], g["x"]:g["x"] + g["w"]])
        ax.set_facecolor("#181b1f")
        ax.set_title(panel.get("title", ""), color="#ccccdc", fontsize=9, loc="left")
        ax.tick_params(colors="#8e8e8e", labelsize=7)
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        lines: dict[str, list[float]] = {}
        for target in panel.get("targets", []):
            node = parse(target["expr"])
            for i, t in enumerate(times):
                for labels, value in evaluate(node, store, t).items():
                    lines.setdefault(_legend(target.get("legendFormat", ""), labels), [math.nan] * len(times))[i] = value
        with_data += bool(lines)
        if panel["type"] == "stat":
            _draw_stat(ax, panel, lines)
            continue
        if not lines:
            ax.text(0.5, 0.5, "No data", color="#8e8e8e", ha="center", va="center", transform=ax.transAxes)
            continue
        stacked = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {}).get("stacking", {}) \
            .get("mode") == "normal"
        names = sorted(lines)
        if stacked:
            ys = [[0.0 if math.isnan(v) else v for v in lines[n]] for n in names]
            ax.stackplot(times, ys, labels=names, alpha=0.6)
        else:
            for name in names:
                ax.plot(times, lines[name], label=name, linewidth=1.2)
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        ax.set_xlabel("seconds since router start", color="#8e8e8e", fontsize=7)
        if unit and unit not in ("short", "none"):
            ax.set_ylabel(unit, color="#8e8e8e", fontsize=7)
        ax.grid(color="#2c3235", linewidth=0.5)
        legend = ax.legend(fontsize=6, loc="upper left", facecolor="#181b1f", edgecolor="#2c3235", ncol=2)
        for text in legend.get_texts():
            text.set_color("#ccccdc")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, facecolor=fig.get_facecolor())
    plt.close(fig)
    return with_data


def _draw_stat(ax: Any, panel: Mapping[str, Any], lines: Mapping[str, list[float]]) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    values = [v for series in lines.values() for v in series if not math.isnan(v)]
    if not values:
        ax.text(0.5, 0.4, "No data", color="#8e8e8e", ha="center", va="center", transform=ax.transAxes)
        return
    last = [s for s in lines.values()][0]
    value = next((v for v in reversed(last) if not math.isnan(v)), math.nan)
    color = "#73bf69"
    steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
    for step in steps:
        if step.get("value") is None or value >= step["value"]:
            color = {"green": "#73bf69", "red": "#f2495c"}.get(step.get("color"), step.get("color", color))
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    text = f"{value:.0f} s" if unit == "s" and value >= 10 else (f"{value:.2f} s" if unit == "s" else f"{value:g}")
    ax.text(0.5, 0.4, text, color=color, ha="center", va="center", fontsize=20, transform=ax.transAxes)


# --- capture: the real router on loopback --------------------------------------------------------------------
async def _scrape_loop(url: str, out: Path, interval: float, stop: asyncio.Event, started: float) -> int:
    import httpx

    n = 0
    async with httpx.AsyncClient(timeout=5.0) as client:
        with out.open("w") as fh:
            while not stop.is_set():
                t = time.monotonic() - started
                try:
                    samples = lodestar_samples((await client.get(url + "/metrics")).text)
                    fh.write(json.dumps({"t": round(t, 3), "samples": samples}) + "\n")
                    fh.flush()
                    n += 1
                except Exception as exc:  # a missed scrape is a gap in the plot, not a failed capture
                    print(f"  scrape at {t:.0f} s failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                try:
                    await asyncio.wait_for(stop.wait(), interval)
                except TimeoutError:
                    pass
    return n


def capture(args: argparse.Namespace) -> int:
    from lodestar_vllm.integrations.production_stack import e2e
    from lodestar_vllm.integrations.production_stack.loopback import free_port, start_router, stop_router
    from lodestar_vllm.workloads import load_workload

    if not args.checkout or not (Path(args.checkout) / "src" / "vllm_router").is_dir():
        print("capture: set LODESTAR_PRODUCTION_STACK (or --checkout) to a production-stack checkout; "
              "see docs/production-stack.md", file=sys.stderr)
        return 2
    requests = load_workload(args.workload, seed=args.seed, rate_scale=args.rate_scale, duration=args.duration,
                             max_requests=args.max_requests)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"capture: {len(requests)} requests over {requests[-1].arrival_time:.0f} s, scraping every "
          f"{args.interval} s into {out}", flush=True)
    engines, urls = e2e.start_engines(args, out.with_suffix(".engines.log"))
    try:
        port = str(free_port())
        cmd = [sys.executable, "-m", "lodestar_vllm.integrations.production_stack.launcher",
               "--host", "127.0.0.1", "--port", port, "--service-discovery", "static",
               "--static-backends", ",".join(urls), "--static-models", ",".join([args.model] * len(urls)),
               "--engine-stats-interval", "1", "--log-level", "warning", "--routing-logic", "learned",
               "--lodestar-policy", "learned", "--lodestar-scrape-interval", "1"]
        if args.policy_options:
            cmd += ["--lodestar-policy-options", args.policy_options]
        env = {"PYTHONPATH": os.pathsep.join([str(Path(args.checkout) / "src"), str(e2e.REPO),
                                               os.environ.get("PYTHONPATH", "")])}
        router, url = start_router(cmd, env=env, log_path=str(out.with_suffix(".router.log")))
        try:
            async def run() -> int:
                stop = asyncio.Event()
                scraper = asyncio.create_task(_scrape_loop(url, out, args.interval, stop, time.monotonic()))
                results = await e2e.replay(url, requests, args, tag="dash")
                await asyncio.sleep(args.interval * 2)  # the last outcomes land in the metrics
                stop.set()
                scrapes = await scraper
                ok = sum(r.status == "ok" for r in results)
                print(f"capture: {ok}/{len(results)} requests ok, {scrapes} scrapes", flush=True)
                return scrapes

            scrapes = asyncio.run(run())
        finally:
            stop_router(router)
    finally:
        engines.terminate()
        engines.wait(timeout=15)
    return 0 if scrapes >= 2 else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="step", required=True)
    cap = sub.add_parser("capture", help="real router + emulated engines on loopback -> samples JSONL")
    cap.add_argument("--checkout", default=os.environ.get("LODESTAR_PRODUCTION_STACK"))
    cap.add_argument("--workload", default="prefix-sharing")
    cap.add_argument("--duration", type=float, default=180.0)
    cap.add_argument("--max-requests", type=int, default=3000)
    cap.add_argument("--rate-scale", type=float, default=1.0)
    cap.add_argument("--max-tokens", type=int, default=16)
    cap.add_argument("--seed", type=int, default=0)
    cap.add_argument("--fast-gpu", default="H100-80GB")
    cap.add_argument("--slow-gpu", default="L4")
    cap.add_argument("--model", default="llama-3.1-8b")
    cap.add_argument("--request-timeout", type=float, default=120.0)
    cap.add_argument("--policy-options", default=None, help="JSON for --lodestar-policy-options")
    cap.add_argument("--interval", type=float, default=2.0, help="seconds between /metrics scrapes")
    cap.add_argument("--out", required=True, help="samples JSONL")
    ren = sub.add_parser("render", help="samples JSONL + dashboard JSON -> PNG")
    ren.add_argument("--dashboard", default="helm-values/grafana-dashboard.json")
    ren.add_argument("--samples", required=True)
    ren.add_argument("--out", required=True)
    ren.add_argument("--note", default="", help="appended to the figure title")


def run(args: argparse.Namespace) -> int:
    if args.step == "capture":
        return capture(args)
    try:
        dashboard = json.loads(Path(args.dashboard).read_text())
        store = SeriesStore.from_jsonl(Path(args.samples))
        with_data = render(dashboard, store, Path(args.out), args.note)
    except (OSError, ValueError) as exc:
        print(f"dashboard render: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {with_data}/{len(dashboard.get('panels', []))} panels with data, "
          f"{len(store.times)} scrapes over {store.times[-1] - store.times[0]:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lodestar_vllm.bench.dashboard_render", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
