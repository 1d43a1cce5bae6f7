#!/usr/bin/env python3
"""Read the results.json files written by scripts/results.sh and print the README's summary tables: learned
vs AIBrix, vs the best heuristic and vs the oracle per scenario, the issue-4 targets marked met / MISSED,
learning speed, warm start, adaptation to a slowdown, and router replicas with and without model sharing.

Learning-curve criteria compare 30-s arrival windows. A window's raw mean TTFT moves with the load in that
window (the cluster starts empty, arrivals are bursty), so each verdict is given twice: on raw TTFT and on the
learned router's TTFT divided by the best heuristic's in the same window ("normalised"). A heuristic does not
learn, so the ratio isolates what the router has learned from what the workload did. (The oracle is no good
reference here: near saturation its greedy choices can make its own queues grow without end.)

Usage: .venv/bin/python scripts/summarize_results.py [--root out/results]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LEARNED = "learned"
AIBRIX = "aibrix-prefix-load"
ORACLE = "oracle-greedy"
WINDOW_S = 30.0

# (directory under --root, label): the five issue-4 scenarios; the first one is the issue's >= 3x scenario
SCENARIOS: tuple[tuple[str, str], ...] = (
    ("het-prefix", "paper-heterogeneous / prefix-sharing"),
    ("hom-prefix", "paper-homogeneous / prefix-sharing"),
    ("het-mooncake", "paper-heterogeneous / mooncake-conversation"),
    ("hom-mooncake", "paper-homogeneous / mooncake-conversation"),
    ("mixed-mrqa", "mixed-fleet / multi-round-qa"),
)
HETEROGENEOUS = "het-prefix"

# Targets from issue 4
AIBRIX_MEAN_TARGET = 1.5
AIBRIX_P99_TARGET = 1.6
AIBRIX_HET_MEAN_TARGET = 3.0
BEST_HEURISTIC_AVG_TARGET = 1.15
BEST_HEURISTIC_FLOOR = 0.97
ORACLE_GAP_TARGET = 1.15
CONVERGE_TOLERANCE = 1.10
CONVERGE_WITHIN_S = 60.0


def is_heuristic(name: str) -> bool:
    return name != ORACLE and not name.startswith(LEARNED)


def load(path: Path) -> dict[str, Any] | None:
    file = path / "results.json"
    if not file.is_file():
        return None
    return json.loads(file.read_text(encoding="utf-8"))


def verdict(ok: bool) -> str:
    return "met" if ok else "**MISSED**"


def geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


@dataclass(frozen=True, slots=True)
class ScenarioRatios:
    label: str
    rate_scale: float
    best_heuristic: str
    learned_mean: float
    learned_p99: float
    vs_aibrix_mean: float  # aibrix / learned: > 1 means learned is faster
    vs_aibrix_p99: float
    vs_best_mean: float  # best heuristic / learned
    vs_oracle_mean: float  # learned / oracle: 1.0 = as good as the oracle
    oracle_vs_best: float  # oracle / best heuristic (mean): above 1, the oracle is no bound
    load_vs_idle: float | None  # best heuristic's mean TTFT / the best heuristic's at idle (the load test)


def best_heuristic_mean(doc: Mapping[str, Any]) -> tuple[str, float]:
    heur = {
        n: r["ttft_mean_s"] for n, r in doc["policies"].items() if is_heuristic(n) and r.get("ttft_mean_s")
    }
    best = min(heur, key=lambda n: heur[n])
    return best, heur[best]


def scenario_ratios(label: str, doc: Mapping[str, Any], idle: Mapping[str, Any] | None) -> ScenarioRatios:
    pol = doc["policies"]
    best, best_mean = best_heuristic_mean(doc)
    learned, aibrix, oracle = pol[LEARNED], pol[AIBRIX], pol[ORACLE]
    return ScenarioRatios(
        label=label,
        rate_scale=doc["scenario"]["rate_scale"],
        best_heuristic=best,
        learned_mean=learned["ttft_mean_s"],
        learned_p99=learned["ttft_p99_s"],
        vs_aibrix_mean=aibrix["ttft_mean_s"] / learned["ttft_mean_s"],
        vs_aibrix_p99=aibrix["ttft_p99_s"] / learned["ttft_p99_s"],
        vs_best_mean=best_mean / learned["ttft_mean_s"],
        vs_oracle_mean=learned["ttft_mean_s"] / oracle["ttft_mean_s"],
        oracle_vs_best=oracle["ttft_mean_s"] / best_mean,
        load_vs_idle=best_mean / best_heuristic_mean(idle)[1] if idle is not None else None,
    )


def scenario_table(label: str, doc: Mapping[str, Any]) -> str:
    """Every policy of one scenario, sorted by mean TTFT."""
    pol = doc["policies"]
    sc = doc["scenario"]
    head = (
        f"**{label}** (rate scale {sc['rate_scale']:g}, duration {sc['duration']:g} s, seed {sc['seed']}, "
        f"{pol[next(iter(pol))]['requests']} requests)"
    )
    lines = [
        head,
        "",
        "| policy | TTFT mean s | p50 | p90 | p99 | e2e mean s | prefix hit | preempt | failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in sorted(pol.items(), key=lambda kv: kv[1].get("ttft_mean_s") or math.inf):
        lines.append(
            f"| {name} | {r['ttft_mean_s']:.3f} | {r['ttft_p50_s']:.3f} | {r['ttft_p90_s']:.3f} | "
            f"{r['ttft_p99_s']:.3f} | {r['e2e_mean_s']:.2f} | {r['prefix_hit_rate']:.1%} | "
            f"{r['preemptions']} | "
            f"{r['failed']} |"
        )
    return "\n".join(lines)


def load_table(root: Path) -> str:
    """Per scenario: the load it ran at, and the best baseline's mean TTFT there vs at idle."""
    lines = [
        "| scenario | rate scale | duration s | requests | idle TTFT s (best baseline) | "
        "best baseline at load s "
        "| ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, label in SCENARIOS:
        doc, idle = load(root / key), load(root / f"{key}-idle")
        if doc is None:
            continue
        sc = doc["scenario"]
        best, mean = best_heuristic_mean(doc)
        requests = max(r["requests"] for r in doc["policies"].values())
        if idle is None:
            idle_cell, ratio = "-", "-"
        else:
            idle_best, idle_mean = best_heuristic_mean(idle)
            idle_cell, ratio = f"{idle_mean:.3f} ({idle_best})", f"{mean / idle_mean:.1f}x"
        lines.append(
            f"| {label} | {sc['rate_scale']:g} | {sc['duration']:g} | {requests} | {idle_cell} | "
            f"{mean:.3f} ({best}) | {ratio} |"
        )
    return "\n".join(lines)


def idle_text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.1f}x"


def summary_table(rows: Sequence[ScenarioRatios]) -> str:
    lines = [
        "| scenario | rate scale | best heuristic / idle | learned mean / p99 s | vs aibrix mean | "
        "vs aibrix p99 | best heuristic | vs best (mean) | learned / oracle (mean) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.label} | {r.rate_scale:g} | {idle_text(r.load_vs_idle)} | "
            f"{r.learned_mean:.3f} / {r.learned_p99:.3f} | "
            f"{r.vs_aibrix_mean:.2f}x | {r.vs_aibrix_p99:.2f}x | {r.best_heuristic} | "
            f"{r.vs_best_mean:.2f}x | {r.vs_oracle_mean:.2f} |"
        )
    n = len(rows)
    if n:
        am = [r.vs_aibrix_mean for r in rows]
        ap = [r.vs_aibrix_p99 for r in rows]
        bm = [r.vs_best_mean for r in rows]
        om = [r.vs_oracle_mean for r in rows]
        lines.append(
            f"| **average** (arithmetic; geometric) | | | | {sum(am) / n:.2f}x; {geomean(am):.2f}x | "
            f"{sum(ap) / n:.2f}x; {geomean(ap):.2f}x | | {sum(bm) / n:.2f}x; {geomean(bm):.2f}x | "
            f"{sum(om) / n:.2f}; {geomean(om):.2f} |"
        )
    lines.append("")
    lines.append(
        "vs X = X's TTFT / learned's TTFT (above 1: learned is faster); learned / oracle: 1.00 = the oracle."
    )
    return "\n".join(lines)


def target_lines(rows: Sequence[ScenarioRatios], missing: Sequence[str]) -> list[str]:
    if not rows:
        return ["no scenario results"]
    n = len(rows)
    avg = lambda xs: sum(xs) / len(xs)  # noqa: E731
    am, ap = avg([r.vs_aibrix_mean for r in rows]), avg([r.vs_aibrix_p99 for r in rows])
    bm = avg([r.vs_best_mean for r in rows])
    worst = min(rows, key=lambda r: r.vs_best_mean)
    om = avg([r.vs_oracle_mean for r in rows])
    het = next((r for r in rows if r.label == dict(SCENARIOS)[HETEROGENEOUS]), None)
    out = [
        f"- vs aibrix-prefix-load, mean TTFT, averaged over {n} scenarios >= {AIBRIX_MEAN_TARGET}x: "
        f"{am:.2f}x -> {verdict(am >= AIBRIX_MEAN_TARGET)}",
        f"- vs aibrix-prefix-load, P99 TTFT, averaged >= {AIBRIX_P99_TARGET}x: {ap:.2f}x -> "
        f"{verdict(ap >= AIBRIX_P99_TARGET)}",
    ]
    if het is not None:
        out.append(
            f"- vs aibrix-prefix-load, mean TTFT on paper-heterogeneous >= {AIBRIX_HET_MEAN_TARGET}x: "
            f"{het.vs_aibrix_mean:.2f}x -> {verdict(het.vs_aibrix_mean >= AIBRIX_HET_MEAN_TARGET)}"
        )
    out += [
        f"- vs best heuristic, mean TTFT, averaged >= {BEST_HEURISTIC_AVG_TARGET}x: {bm:.2f}x -> "
        f"{verdict(bm >= BEST_HEURISTIC_AVG_TARGET)}",
        f"- vs best heuristic never worse than {BEST_HEURISTIC_FLOOR}x: worst {worst.vs_best_mean:.2f}x "
        f"({worst.label}, vs {worst.best_heuristic}) -> "
        f"{verdict(worst.vs_best_mean >= BEST_HEURISTIC_FLOOR)}",
        f"- within {ORACLE_GAP_TARGET - 1:.0%} of oracle-greedy on average (learned / oracle <= "
        f"{ORACLE_GAP_TARGET}): {om:.2f} -> {verdict(om <= ORACLE_GAP_TARGET)}",
    ]
    weak = [r.label for r in rows if r.oracle_vs_best > 1.0]
    if weak:
        out.append(
            f"- note: oracle-greedy is slower than the best heuristic on {', '.join(weak)}: it is greedy per "
            "request on an estimate that ignores seat/KV exhaustion, so it is no bound there"
        )
        bounded = [r.vs_oracle_mean for r in rows if r.oracle_vs_best <= 1.0]
        if bounded:
            ob = avg(bounded)
            out.append(
                f"- within {ORACLE_GAP_TARGET - 1:.0%} of oracle-greedy, averaged where the oracle beats "
                f"every baseline ({len(bounded)} scenarios): {ob:.2f} -> "
                f"{verdict(ob <= ORACLE_GAP_TARGET)}"
            )
    if missing:
        out.append(f"- (not run: {', '.join(missing)}; averages cover the scenarios above only)")
    return out


def windows(doc: Mapping[str, Any], policy: str) -> dict[float, float]:
    return {w["t_s"]: w["ttft_mean_s"] for w in doc["policies"][policy]["timeline"]}


def normalised_timeline(
    doc: Mapping[str, Any], reference: Mapping[str, Any] | None = None
) -> tuple[str, list[tuple[float, float, float]]]:
    """(window start, learned raw mean TTFT, learned / best heuristic) per 30-s window; the best heuristic
    comes from ``reference`` (a run of the same scenario and traffic) when given."""
    src = reference if reference is not None else doc
    if LEARNED not in doc["policies"] or not any(is_heuristic(n) for n in src["policies"]):
        return "", []
    name = best_heuristic_mean(src)[0]
    ref = windows(src, name)
    learned = windows(doc, LEARNED)
    return name, [(t, v, v / ref[t]) for t, v in sorted(learned.items()) if t in ref and ref[t] > 0]


@dataclass(frozen=True, slots=True)
class Convergence:
    """One learning-curve check: is the 30-s window starting at ``window_t`` within 10% of the steady state
    (the mean of the windows from ``steady_from`` on)? Judged on raw TTFT and on TTFT / best heuristic."""

    window_t: float
    steady_from: float
    steady_raw: float
    steady_norm: float
    window_raw: float
    window_norm: float

    @property
    def raw_ok(self) -> bool:
        return self.window_raw <= CONVERGE_TOLERANCE * self.steady_raw

    @property
    def norm_ok(self) -> bool:
        return self.window_norm <= CONVERGE_TOLERANCE * self.steady_norm

    def line(self, what: str) -> str:
        return (
            f"- {what}: window {self.window_t:g}-{self.window_t + WINDOW_S:g} s vs steady state "
            "(windows from "
            f"{self.steady_from:g} s): raw {self.window_raw:.3f} / {self.steady_raw:.3f} s = "
            f"{self.window_raw / self.steady_raw:.2f} -> {verdict(self.raw_ok)}; "
            "normalised by the best heuristic "
            f"{self.window_norm:.2f} / {self.steady_norm:.2f} = {self.window_norm / self.steady_norm:.2f} -> "
            f"{verdict(self.norm_ok)}"
        )


def convergence(
    series: Sequence[tuple[float, float, float]], window_t: float, steady_from: float
) -> Convergence:
    steady = [(raw, norm) for t, raw, norm in series if t >= steady_from]
    window = next(((raw, norm) for t, raw, norm in series if t == window_t), (math.inf, math.inf))
    return Convergence(
        window_t=window_t,
        steady_from=steady_from,
        steady_raw=sum(r for r, _n in steady) / len(steady),
        steady_norm=sum(n for _r, n in steady) / len(steady),
        window_raw=window[0],
        window_norm=window[1],
    )


def curve_line(series: Sequence[tuple[float, float, float]], upto: int = 20) -> str:
    return ", ".join(f"{t:g}s: {raw:.2f} ({norm:.2f})" for t, raw, norm in series[:upto])


def learning_section(cold: Mapping[str, Any] | None, warm: Mapping[str, Any] | None) -> list[str]:
    out = ["### Learning speed and warm start (paper-heterogeneous / prefix-sharing)", ""]
    if cold is None:
        return out + ["not run"]
    ref, series = normalised_timeline(cold)
    if not series:
        return out + ["needs learned and heuristic timelines"]
    half = cold["scenario"]["duration"] / 2
    # "within 10% of its final steady state within 60 s": the window ending at 60 s is within 10%
    cold_check = convergence(series, CONVERGE_WITHIN_S - WINDOW_S, half)
    out.append(
        f"Cold start, per 30-s window `start: learned mean TTFT s (learned / {ref})`: {curve_line(series)}"
    )
    out.append("")
    out.append(cold_check.line(f"cold start within 10% of steady state by {CONVERGE_WITHIN_S:g} s"))
    if warm is None:
        return out + ["- warm start: not run"]
    _ref, wseries = normalised_timeline(warm, reference=cold)
    out.append("")
    out.append(f"Warm start (checkpoint from a seed-1 run, same seed-0 traffic): {curve_line(wseries)}")
    out.append("")
    out.append(
        convergence(wseries, 0.0, half).line("warm start within 10% of steady state from the first window")
    )
    cold_l, warm_l = cold["policies"][LEARNED], warm["policies"][LEARNED]
    out.append(
        f"- first 60 s mean TTFT: cold {cold_l['ttft_first_60s_mean_s']:.3f} s, warm "
        f"{warm_l['ttft_first_60s_mean_s']:.3f} s; whole run: cold {cold_l['ttft_mean_s']:.3f} s, warm "
        f"{warm_l['ttft_mean_s']:.3f} s"
    )
    return out


def adaptation_section(doc: Mapping[str, Any] | None, label: str) -> list[str]:
    out = [f"### Adaptation ({label}: the four A30s become 2x slower at half the run)", ""]
    if doc is None:
        return out + ["not run"]
    ref, series = normalised_timeline(doc)
    if not series:
        return out + ["needs learned and heuristic timelines"]
    at = doc["scenario"]["duration"] / 2  # the preset's change is at half the arrivals' span
    end = max(t for t, _r, _n in series) + WINDOW_S
    late = at + WINDOW_S * round((end - at) / 2 / WINDOW_S)
    check = convergence(series, at + CONVERGE_WITHIN_S - WINDOW_S, late)
    out.append(f"Per 30-s window `start: learned mean TTFT s (learned / {ref})`: {curve_line(series, 40)}")
    out.append("")
    out.append(
        check.line(
            f"recovers within 10% of the new steady state within {CONVERGE_WITHIN_S:g} s of the "
            f"slowdown at ~{at:g} s"
        )
    )
    out += ["", "| policy | TTFT mean s | p99 | mean before slowdown | mean after |", "|---|---|---|---|---|"]
    for name, r in sorted(doc["policies"].items(), key=lambda kv: kv[1]["ttft_mean_s"]):
        before = [(w["ttft_mean_s"], w["requests"]) for w in r["timeline"] if w["t_s"] < at]
        after = [(w["ttft_mean_s"], w["requests"]) for w in r["timeline"] if w["t_s"] >= at]
        wmean = lambda xs: sum(v * n for v, n in xs) / max(1, sum(n for _v, n in xs))  # noqa: E731
        out.append(
            f"| {name} | {r['ttft_mean_s']:.3f} | {r['ttft_p99_s']:.3f} | {wmean(before):.3f} | "
            f"{wmean(after):.3f} |"
        )
    return out


def replicas_section(
    single: Mapping[str, Any] | None, apart: Mapping[str, Any] | None, shared: Mapping[str, Any] | None
) -> list[str]:
    out = [
        "### Router replicas (paper-heterogeneous / prefix-sharing, 4 replicas, requests split by session)",
        "",
    ]
    if single is None or apart is None or shared is None:
        return out + ["not run"]
    rows: list[tuple[str, str, Mapping[str, Any]]] = [(LEARNED, "1 router", single["policies"][LEARNED])]
    rows.append((LEARNED, "4 replicas, no sharing", apart["policies"][LEARNED]))
    rows.append((LEARNED, "4 replicas, share every 30 s", shared["policies"][LEARNED]))
    for name in apart["policies"]:  # heuristics run as replicas too: is the loss the learner's or everyone's?
        if is_heuristic(name) and name in single["policies"]:
            rows.append((name, "1 router", single["policies"][name]))
            rows.append((name, "4 replicas", apart["policies"][name]))
    out += [
        "| policy | setup | TTFT mean s | p99 | first 60 s mean | mean / same policy, 1 router | "
        "model shares |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, setup, r in rows:
        base = single["policies"][name]["ttft_mean_s"]
        out.append(
            f"| {name} | {setup} | {r['ttft_mean_s']:.3f} | {r['ttft_p99_s']:.3f} | "
            f"{r['ttft_first_60s_mean_s']:.3f} | {r['ttft_mean_s'] / base:.2f} | {r['shares']} |"
        )
    return out


def seed_roots(root: Path) -> list[tuple[str, Path]]:
    """(seed label, folder): the main run (seed 0) and scripts/results.sh's seed<N> folders."""
    extra = sorted(p for p in root.glob("seed*") if p.is_dir() and p.name[4:].isdigit())
    return [("0", root), *((p.name[4:], p) for p in extra)]


def averaged_doc(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Each policy's mean and p99 TTFT averaged over runs of one scenario (policies in every run)."""
    names = [n for n in docs[0]["policies"] if all(n in d["policies"] for d in docs)]
    policies = {}
    for name in names:
        runs = [d["policies"][name] for d in docs]
        if any(r.get("ttft_mean_s") is None for r in runs):
            continue
        policies[name] = {k: sum(r[k] for r in runs) / len(runs) for k in ("ttft_mean_s", "ttft_p99_s")}
    return {"scenario": docs[0]["scenario"], "policies": policies}


def seeds_section(root: Path) -> list[str]:
    roots = seed_roots(root)
    out = ["### Across seeds", ""]
    if len(roots) < 2:
        return out + ["only seed 0 was run (EXTRA_SEEDS)"]
    seeds = ", ".join(s for s, _p in roots)
    out += [
        f"The five scenarios with seeds {seeds} (arrival jitter and sampling differ). "
        "Per seed: learned's mean "
        "TTFT, the best baseline's, learned vs best baseline and vs AIBrix (mean).",
        "",
        "| scenario | seed | learned mean s | best baseline mean s | vs best | vs aibrix |",
        "|---|---|---|---|---|---|",
    ]
    rows, missing = [], []
    for key, label in SCENARIOS:
        docs = []
        for seed, folder in roots:
            doc = load(folder / key)
            if doc is None or any(p not in doc["policies"] for p in (LEARNED, AIBRIX, ORACLE)):
                continue
            docs.append(doc)
            r = scenario_ratios(label, doc, None)
            best_name, best_mean = best_heuristic_mean(doc)
            out.append(
                f"| {label} | {seed} | {r.learned_mean:.3f} | {best_mean:.3f} ({best_name}) | "
                f"{r.vs_best_mean:.2f}x | {r.vs_aibrix_mean:.2f}x |"
            )
        if len(docs) == len(roots):
            rows.append(scenario_ratios(label, averaged_doc(docs), None))
        else:
            missing.append(label)
    out += [
        "",
        f"Each policy's mean and P99 TTFT averaged over seeds {seeds}, then the same ratios and targets:",
        "",
    ]
    out.append(summary_table(rows))
    out += ["", *target_lines(rows, missing)]
    return out


def focus_policies(doc: Mapping[str, Any]) -> list[str]:
    """learned, the oracle, AIBrix and the best heuristic: the lines a reader compares."""
    best, _mean = best_heuristic_mean(doc)
    return [p for p in dict.fromkeys((LEARNED, ORACLE, AIBRIX, best)) if p in doc["policies"]]


def write_plots(root: Path, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    colors = {LEARNED: "tab:blue", ORACLE: "black", AIBRIX: "tab:orange"}

    def line_style(name: str) -> dict[str, Any]:
        return {"color": colors.get(name, "tab:green"), "linestyle": ":" if name == ORACLE else "-"}

    het, warm, slow = load(root / HETEROGENEOUS), load(root / "het-prefix-warm"), load(root / "het-slowdown")
    if het is not None:
        fig, ax = plt.subplots(figsize=(7, 4))
        for name in focus_policies(het):
            tl = het["policies"][name]["timeline"]
            ax.plot(
                [w["t_s"] + WINDOW_S / 2 for w in tl],
                [w["ttft_mean_s"] for w in tl],
                marker="o",
                label=name,
                **line_style(name),
            )
        if warm is not None:
            tl = warm["policies"][LEARNED]["timeline"]
            ax.plot(
                [w["t_s"] + WINDOW_S / 2 for w in tl],
                [w["ttft_mean_s"] for w in tl],
                marker="s",
                color="tab:blue",
                linestyle="--",
                label="learned, warm start",
            )
        ax.set_yscale("log")
        ax.set_xlabel("arrival time (s), 30-s windows")
        ax.set_ylabel("TTFT mean (s, log)")
        ax.set_title(f"Learning curve: {dict(SCENARIOS)[HETEROGENEOUS]}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        written.append(_save(fig, plt, out_dir / "learning_curve.png"))
    if slow is not None:
        fig, ax = plt.subplots(figsize=(7, 4))
        for name in focus_policies(slow):
            tl = slow["policies"][name]["timeline"]
            ax.plot(
                [w["t_s"] + WINDOW_S / 2 for w in tl],
                [w["ttft_mean_s"] for w in tl],
                marker="o",
                label=name,
                **line_style(name),
            )
        ax.axvline(slow["scenario"]["duration"] / 2, color="grey", linestyle="--", label="A30s 2x slower")
        ax.set_xlabel("arrival time (s), 30-s windows")
        ax.set_ylabel("TTFT mean (s)")
        ax.set_title("Adaptation: paper-heterogeneous-slowdown / prefix-sharing")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        written.append(_save(fig, plt, out_dir / "adaptation.png"))
    docs = [(label, load(root / key)) for key, label in SCENARIOS]
    docs = [(label, doc) for label, doc in docs if doc is not None]
    if docs:
        ncols = min(3, len(docs))
        nrows = math.ceil(len(docs) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.8 * ncols, 3.4 * nrows), squeeze=False)
        flat = [ax for row in axes for ax in row]
        for ax, (label, doc) in zip(flat, docs, strict=False):
            for name in focus_policies(doc):
                cdf = doc["policies"][name]["ttft_cdf"]
                ax.plot([max(v, 1e-3) for v in cdf["ttft_s"]], cdf["q"], label=name, **line_style(name))
            ax.set_xscale("log")
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("TTFT (s, log)")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        for ax in flat[len(docs) :]:
            ax.set_visible(False)
        for row in axes:
            row[0].set_ylabel("fraction of requests")
        written.append(_save(fig, plt, out_dir / "ttft_cdf.png"))
    return written


def _save(fig: Any, plt: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    try:  # a palette PNG is a fraction of the size (these plots have few colours)
        from PIL import Image

        with Image.open(path) as img:
            img.convert("RGB").quantize(colors=64).save(path, optimize=True)
    except ImportError:
        pass
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", type=Path, default=Path("out/results"), help="scripts/results.sh output root"
    )
    parser.add_argument("--no-scenario-tables", action="store_true", help="print only the summary")
    parser.add_argument("--plots", type=Path, help="also write the focused plots (PNG) into this folder")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(f"no results under {args.root}: run scripts/results.sh first", file=sys.stderr)
        return 2
    rows, missing, tables = [], [], []
    for key, label in SCENARIOS:
        doc = load(args.root / key)
        if doc is None:
            missing.append(label)
            continue
        lacking = [p for p in (LEARNED, AIBRIX, ORACLE) if p not in doc["policies"]]
        if lacking:
            print(f"{args.root / key}: no {', '.join(lacking)} (skipped)", file=sys.stderr)
            missing.append(label)
            continue
        tables.append(scenario_table(label, doc))
        rows.append(scenario_ratios(label, doc, load(args.root / f"{key}-idle")))
    print("## Load per scenario\n")
    print(load_table(args.root) + "\n")
    print("## Summary: learned vs baselines and the oracle (mean and P99 TTFT)\n")
    print(summary_table(rows) + "\n")
    print("### Issue-4 targets\n")
    print("\n".join(target_lines(rows, missing)) + "\n")
    print(
        "\n".join(learning_section(load(args.root / HETEROGENEOUS), load(args.root / "het-prefix-warm")))
        + "\n"
    )
    print(
        "\n".join(adaptation_section(load(args.root / "het-slowdown"), "paper-heterogeneous-slowdown")) + "\n"
    )
    print(
        "\n".join(
            replicas_section(
                load(args.root / HETEROGENEOUS),
                load(args.root / "het-replicas"),
                load(args.root / "het-replicas-shared"),
            )
        )
    )
    print("\n" + "\n".join(seeds_section(args.root)))
    if not args.no_scenario_tables:
        print("\n## Every policy per scenario (sorted by mean TTFT)\n")
        print("\n\n".join(tables))
    if args.plots is not None:
        for path in write_plots(args.root, args.plots):
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
