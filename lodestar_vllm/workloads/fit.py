"""Fit the trace look-alikes to the public traces and print the fitted parameters.

    python -m lodestar_vllm.workloads.fit [--shared PATH] [--write]

Prints the fitted ``TRACE_LIKE`` parameters (and ShareGPT turn-length quantiles) and compares each trace with its look-alike (same statistics,
measured the same way); ``--write`` regenerates fitted.py with them. The traces stay in the shared folder; only
these figures enter the code.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
from pathlib import Path

import numpy as np

from lodestar_vllm.workloads.readers import MOONCAKE_BLOCK_TOKENS, read_azure_csv, read_mooncake
from lodestar_vllm.workloads.sampling import PERCENTILES
from lodestar_vllm.workloads.stats import workload_stats
from lodestar_vllm.workloads.trace_like import TraceLikeParams, generate_trace_like
from lodestar_vllm.workloads.types import WorkloadRequest

TRACES = {
    "mooncake-like": ("Mooncake conversation trace", ("data", "traces", "mooncake", "conversation_trace.jsonl")),
    "azure-code-like": ("Azure 2023 code trace", ("data", "traces", "azure2023", "AzureLLMInferenceTrace_code.csv")),
    "azure-conv-like": ("Azure 2023 conversation trace", ("data", "traces", "azure2023", "AzureLLMInferenceTrace_conv.csv")),
}
SHAREGPT = ("data", "traces", "sharegpt", "sharegpt_v3_prefix_turn_lengths.csv.gz")
BURST_WINDOW_S = 30.0


def quantiles(values: list[float] | np.ndarray) -> tuple[float, ...]:
    return tuple(round(float(v), 1) for v in np.percentile(np.asarray(values, dtype=float), PERCENTILES))


def burstiness_cv(arrivals: np.ndarray, bucketed: bool) -> float:
    """Inter-arrival cv. Bucketed timestamps (Mooncake: ~3 s) hide the gaps, so there the cv comes from the
    dispersion of counts in 30 s windows instead (var/mean of counts -> cv^2 for a renewal process)."""
    if not bucketed:
        gaps = np.diff(np.sort(arrivals))
        return float(gaps.std() / gaps.mean())
    counts = np.bincount((arrivals // BURST_WINDOW_S).astype(int))
    return float(np.sqrt(counts.var() / counts.mean()))


def rate_swing_sigma(arrivals: np.ndarray, cv: float) -> float:
    """Lognormal sigma of a per-window rate multiplier that explains the window counts' dispersion beyond what a
    renewal process of this cv gives: var(N) ~ m cv^2 + m^2 (exp(sigma^2) - 1), m the mean count."""
    counts = np.bincount((arrivals // BURST_WINDOW_S).astype(int))
    m = counts.mean()
    excess = (counts.var() - m * cv * cv) / (m * m)
    return float(np.sqrt(np.log1p(excess))) if excess > 0 else 0.0


def conversation_structure(requests: list[WorkloadRequest]) -> tuple[np.ndarray, list[float], list[int], list[int]]:
    """Per request: is it a follow-up (shares more than the common first block with an earlier request)? For
    follow-ups: seconds back to the latest earlier request holding that prefix, and tokens beyond its prompt."""
    latest: dict[tuple[int, ...], int] = {}
    followup = np.zeros(len(requests), dtype=bool)
    ages: list[float] = []
    appends: list[int] = []
    new_prompts: list[int] = []
    for i, r in enumerate(requests):
        keys = tuple(k for k, _ in r.segments)
        shared = next((j for j in range(len(keys), 0, -1) if keys[:j] in latest), 0)
        if shared > 1:
            parent = requests[latest[keys[:shared]]]
            followup[i] = True
            ages.append(r.arrival_time - parent.arrival_time)
            appends.append(max(1, r.prompt_tokens - parent.prompt_tokens))
        else:
            new_prompts.append(r.prompt_tokens)
        for j in range(1, len(keys) + 1):
            latest[keys[:j]] = i
    return followup, ages, appends, new_prompts


def fit(name: str, source: str, requests: list[WorkloadRequest], mooncake: bool) -> TraceLikeParams:
    arrivals = np.array([r.arrival_time for r in requests])
    duration = float(arrivals.max() - arrivals.min())
    prompts = [r.prompt_tokens for r in requests]
    cv = round(burstiness_cv(arrivals, bucketed=mooncake), 3)
    common = dict(
        name=name,
        source=source,
        rate=round((len(requests) - 1) / duration, 4),
        cv=cv,
        # Mooncake's cv already comes from window counts; the others may swing more than their cv explains
        rate_sigma=0.0 if mooncake else round(rate_swing_sigma(arrivals, cv), 3),
        rate_window=BURST_WINDOW_S,
        duration=round(duration, 1),
        output_quantiles=quantiles([r.output_tokens for r in requests]),
        max_prompt=int(max(prompts)),
    )
    if not mooncake:
        return TraceLikeParams(summary="lengths, rate, burstiness; no prefix sharing", prompt_quantiles=quantiles(prompts), **common)
    followup, ages, appends, new_prompts = conversation_structure(requests)
    return TraceLikeParams(
        summary="lengths, rate, burstiness, common first block, conversation follow-ups",
        prompt_quantiles=quantiles(new_prompts),
        shared_prefix=MOONCAKE_BLOCK_TOKENS,
        followup_fraction=round(float(followup.mean()), 4),
        followup_age_quantiles=quantiles(ages),
        followup_append_quantiles=quantiles(appends),
        **common,
    )


def fit_sharegpt(path: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Quantiles of ShareGPT human-turn and reply lengths (cl100k tokens): lengths only, never text."""
    human: list[int] = []
    gpt: list[int] = []
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            (human if row["role"] == "human" else gpt).append(int(row["tokens_cl100k"]))
    return quantiles(human), quantiles(gpt)


def _stats_line(label: str, requests: list[WorkloadRequest], block_size: int) -> str:
    s = workload_stats(requests, block_size=block_size)
    window_cv = burstiness_cv(np.array([r.arrival_time for r in requests]), bucketed=True)
    return (
        f"  {label:<10} n={s.requests:>6} rate={s.rate_per_s:6.3f}/s cv={s.interarrival_cv:5.2f} "
        f"cv30s={window_cv:5.2f} "
        f"prompt mean={s.prompt_mean:8.0f} p50={s.prompt_p50:7.0f} p99={s.prompt_p99:7.0f} "
        f"output mean={s.output_mean:6.0f} prefix-hit={s.prefix_hit_ratio:.3f}"
    )


FITTED_HEADER = '''"""Fitted parameters of the trace look-alikes (lodestar_vllm.workloads.trace_like).

Written by ``python -m lodestar_vllm.workloads.fit --write`` from the public traces in ../shared/data/traces
(Mooncake FAST'25 conversation trace, Apache-2.0; Azure LLM inference traces 2023, CC-BY-4.0, Splitwise ISCA
2024). Do not edit by hand: refit. The fit's comparison of each trace with its look-alike:

{comparison}
"""

from __future__ import annotations

from lodestar_vllm.workloads.trace_like import TraceLikeParams

# ShareGPT turn lengths (cl100k tokens) at sampling.PERCENTILES, from {sharegpt}
SHAREGPT_QUESTION_QUANTILES: tuple[float, ...] = {human}
SHAREGPT_ANSWER_QUANTILES: tuple[float, ...] = {gpt}

TRACE_LIKE: dict[str, TraceLikeParams] = {{
'''


def render_fitted(
    params: list[TraceLikeParams], comparison: list[str], sharegpt: tuple[tuple[float, ...], tuple[float, ...]]
) -> str:
    lines = [
        FITTED_HEADER.format(
            comparison="\n".join(comparison), sharegpt="/".join(SHAREGPT), human=sharegpt[0], gpt=sharegpt[1]
        )
    ]
    for p in params:
        lines.append(f'    "{p.name}": TraceLikeParams(\n')
        for field in dataclasses.fields(p):
            value = getattr(p, field.name)
            shown = f'"{value}"' if isinstance(value, str) else repr(value)
            lines.append(f"        {field.name}={shown},\n")
        lines.append("    ),\n")
    lines.append("}\n")
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    from lodestar_vllm.workloads.catalog import shared_root

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=None, help="the shared folder (default: $LODESTAR_SHARED or ../shared)")
    parser.add_argument("--write", action="store_true", help="regenerate lodestar_vllm/workloads/fitted.py")
    args = parser.parse_args(argv)
    root = args.shared or shared_root()
    fitted: dict[str, tuple[TraceLikeParams, list[WorkloadRequest]]] = {}
    for name, (source, parts) in TRACES.items():
        path = root.joinpath(*parts)
        if not path.is_file():
            print(f"# {name}: {path} absent, skipped")
            continue
        mooncake = path.suffix == ".jsonl"
        requests = read_mooncake(path) if mooncake else read_azure_csv(path)
        fitted[name] = (fit(name, source, requests, mooncake), requests)
    sharegpt_path = root.joinpath(*SHAREGPT)
    sharegpt = fit_sharegpt(sharegpt_path) if sharegpt_path.is_file() else None
    if sharegpt:
        print(f"SHAREGPT_QUESTION_QUANTILES = {sharegpt[0]}\nSHAREGPT_ANSWER_QUANTILES = {sharegpt[1]}")
    print("TRACE_LIKE: dict[str, TraceLikeParams] = {")
    for name, (params, _) in fitted.items():
        print(f"    {name!r}: {params!r},")
    print("}")
    comparison = [
        "trace vs look-alike (seed 0); cv30s: cv from counts in 30 s windows (Mooncake's bucketed timestamps",
        "make its plain cv meaningless); prefix-hit: on 512-token blocks of the text, unlimited cache",
    ]
    for name, (params, requests) in fitted.items():
        comparison.append(name)
        comparison.append(_stats_line("trace", requests, 512))
        comparison.append(_stats_line("generated", generate_trace_like(params, seed=0, horizon=None, count=None), 512))
    print("\n" + "\n".join(comparison))
    if args.write:
        if len(fitted) != len(TRACES) or sharegpt is None:
            print("not writing fitted.py: some traces are absent")
            return 1
        target = Path(__file__).with_name("fitted.py")
        target.write_text(render_fitted([p for p, _ in fitted.values()], comparison, sharegpt), encoding="utf-8")
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
