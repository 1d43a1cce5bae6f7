"""results.json -> report.md (table with the best per column marked, ratios to the best heuristic and to
AIBrix's prefix-cache router) and PNG plots (TTFT CDF, TTFT over time, load share, TTFT vs load for sweeps)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lodestar_vllm.bench.runner import is_heuristic

AIBRIX = "aibrix-prefix-load"

# (key, header, lower is better, format)
COLUMNS: tuple[tuple[str, str, bool, str], ...] = (
    ("ttft_mean_s", "TTFT mean s", True, "{:.3f}"),
    ("ttft_p50_s", "p50", True, "{:.3f}"),
    ("ttft_p90_s", "p90", True, "{:.3f}"),
    ("ttft_p99_s", "p99", True, "{:.3f}"),
    ("e2e_mean_s", "e2e mean s", True, "{:.2f}"),
    ("e2e_p99_s", "e2e p99", True, "{:.2f}"),
    ("tpot_mean_s", "TPOT ms", True, "ms"),
    ("throughput_tok_s", "out tok/s", False, "{:.0f}"),
    ("prefix_hit_rate", "prefix hit", False, "{:.1%}"),
    ("preemptions", "preempt", True, "{:.0f}"),
    ("failed", "failed", True, "{:.0f}"),
)


def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "ms":
        return f"{value * 1000:.1f}"
    return fmt.format(value)


def best_heuristic(policies: Mapping[str, Mapping[str, Any]], key: str) -> str | None:
    scored = [(v[key], name) for name, v in policies.items() if is_heuristic(name) and v.get(key) is not None]
    return min(scored)[1] if scored else None


def results_table(policies: Mapping[str, Mapping[str, Any]]) -> str:
    header = "| policy | " + " | ".join(c[1] for c in COLUMNS) + " | wall s | cpu s |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 3)]
    best: dict[str, float] = {}
    for key, _h, lower, _f in COLUMNS:
        vals = [v[key] for v in policies.values() if v.get(key) is not None]
        if vals:
            best[key] = min(vals) if lower else max(vals)
    for name, res in policies.items():
        cells = []
        for key, _h, _lower, fmt in COLUMNS:
            text = _fmt(res.get(key), fmt)
            if res.get(key) is not None and key in best and res[key] == best[key] and len(policies) > 1:
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt(res.get('wall_s'), '{:.1f}')} | {_fmt(res.get('cpu_s'), '{:.1f}')} |")
    return "\n".join(lines)


def ratio_table(policies: Mapping[str, Mapping[str, Any]]) -> str:
    ref_mean = best_heuristic(policies, "ttft_mean_s")
    ref_p99 = best_heuristic(policies, "ttft_p99_s")
    aibrix = policies.get(AIBRIX)
    lines = [
        f"Best heuristic by mean TTFT: **{ref_mean or '-'}**; by p99 TTFT: **{ref_p99 or '-'}**. "
        "Ratio = policy / reference (below 1 is better than the reference).",
        "",
        "| policy | mean / best heuristic | p99 / best heuristic | mean / aibrix | p99 / aibrix |",
        "|---|---|---|---|---|",
    ]

    def ratio(res: Mapping[str, Any], ref: Mapping[str, Any] | None, key: str) -> str:
        if ref is None or res.get(key) is None or not ref.get(key):
            return "-"
        return f"{res[key] / ref[key]:.2f}x"

    for name, res in policies.items():
        lines.append(
            f"| {name} | {ratio(res, policies.get(ref_mean) if ref_mean else None, 'ttft_mean_s')} "
            f"| {ratio(res, policies.get(ref_p99) if ref_p99 else None, 'ttft_p99_s')} "
            f"| {ratio(res, aibrix, 'ttft_mean_s')} | {ratio(res, aibrix, 'ttft_p99_s')} |"
        )
    return "\n".join(lines)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cdf(policies: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, res in policies.items():
        cdf = res.get("ttft_cdf") or {}
        if cdf.get("ttft_s"):
            ax.plot([max(v, 1e-4) for v in cdf["ttft_s"]], cdf["q"], label=name)
    ax.set_xscale("log")
    ax.set_xlabel("TTFT (s, log)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("TTFT CDF")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_timeline(policies: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    plt = _plt()
    fig, (ax_mean, ax_p99) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for name, res in policies.items():
        tl = res.get("timeline") or []
        if tl:
            ts = [w["t_s"] for w in tl]
            ax_mean.plot(ts, [w["ttft_mean_s"] for w in tl], label=name)
            ax_p99.plot(ts, [w["ttft_p99_s"] for w in tl], label=name)
    ax_mean.set_ylabel("TTFT mean (s)")
    ax_p99.set_ylabel("TTFT p99 (s)")
    ax_p99.set_xlabel("arrival time (s), 30 s windows")
    for ax in (ax_mean, ax_p99):
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    ax_mean.set_title("TTFT over time (learning curve)")
    ax_mean.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_share(policies: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    plt = _plt()
    names = list(policies)
    instances: list[str] = []
    for res in policies.values():
        for inst in res.get("per_instance_share") or {}:
            if inst not in instances:
                instances.append(inst)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 2))
    left = [0.0] * len(names)
    cmap = plt.get_cmap("tab20")
    for i, inst in enumerate(instances):
        widths = [(policies[n].get("per_instance_share") or {}).get(inst, 0.0) for n in names]
        ax.barh(names, widths, left=left, label=inst, color=cmap(i % 20))
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xlabel("share of requests")
    ax.set_title("load share per instance")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(points: Sequence[Mapping[str, Any]], parameter: str, path: Path) -> None:
    plt = _plt()
    fig, (ax_mean, ax_p99) = plt.subplots(1, 2, figsize=(10, 4))
    names: list[str] = []
    for point in points:
        for name in point["policies"]:
            if name not in names:
                names.append(name)
    for name in names:
        xs, means, p99s = [], [], []
        for point in points:
            res = point["policies"].get(name)
            if res and res.get("ttft_mean_s") is not None:
                xs.append(point["value"])
                means.append(res["ttft_mean_s"])
                p99s.append(res["ttft_p99_s"])
        ax_mean.plot(xs, means, marker="o", label=name)
        ax_p99.plot(xs, p99s, marker="o", label=name)
    for ax, label in ((ax_mean, "TTFT mean (s)"), (ax_p99, "TTFT p99 (s)")):
        ax.set_xlabel(parameter)
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    ax_mean.legend(fontsize=8)
    fig.suptitle(f"TTFT vs {parameter}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _scenario_line(scenario: Mapping[str, Any]) -> str:
    keys = ("cluster", "workload", "seed", "rate_scale", "duration", "max_requests", "scrape_interval_s",
            "scrape_staleness_s", "hide_hardware", "replicas", "share_interval_s")
    line = ", ".join(f"{k}={scenario.get(k)}" for k in keys if k in scenario)
    if scenario.get("instances"):
        line += f". Instances: {', '.join(scenario['instances'])}"
    for change in scenario.get("fleet_changes") or ():
        line += (f". Fleet change at {change['at_fraction']:.0%} of the run: {change['action']} "
                 f"{change['select']} (factor {change['factor']:g})")
    return line


def policy_section(policies: Mapping[str, Mapping[str, Any]]) -> str:
    return results_table(policies) + "\n\n" + ratio_table(policies)


def write_report(out_dir: Path, doc: Mapping[str, Any]) -> Path:
    """Write report.md and its plots next to results.json; returns the report path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    policies = doc["policies"]
    lines = [
        "# Routing benchmark",
        "",
        f"Scenario: {_scenario_line(doc['scenario'])}.",
        "",
        "Latencies are client side in virtual time (TTFT from arrival at the router). Bold: best in column. "
        "Heuristics = every policy except learned* and oracle-greedy (the oracle reads engine internals: a "
        "limit, not deployable).",
        "",
    ]
    sweep = doc.get("sweep")
    if sweep:
        for point in sweep["points"]:
            lines += [f"## {sweep['parameter']} = {point['value']}", "", policy_section(point["policies"]), ""]
        plot_sweep(sweep["points"], sweep["parameter"], out_dir / "ttft_vs_load.png")
        lines += ["![TTFT vs load](ttft_vs_load.png)", ""]
        lines += [f"Plots below are for {sweep['parameter']} = {sweep['points'][0]['value']}.", ""]
    else:
        lines += [policy_section(policies), ""]
    plot_cdf(policies, out_dir / "ttft_cdf.png")
    plot_timeline(policies, out_dir / "ttft_over_time.png")
    plot_share(policies, out_dir / "load_share.png")
    lines += [
        "![TTFT CDF](ttft_cdf.png)",
        "",
        "![TTFT over time](ttft_over_time.png)",
        "",
        "![Load share](load_share.png)",
        "",
    ]
    learned = {n: r for n, r in policies.items() if r.get("decision_paths") and not is_heuristic(n)}
    for name, res in learned.items():
        lines.append(f"Decision paths of {name}: {res['decision_paths']}")
        stats = res.get("policy_stats") or {}
        shown = {k: stats[k] for k in ("model", "recent_accuracy") if isinstance(stats.get(k), dict)}
        if shown:
            lines.append(f"Model of {name} at the end: {json.dumps(shown)}")
        lines.append("")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
