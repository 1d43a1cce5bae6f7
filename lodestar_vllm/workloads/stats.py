"""Summary statistics of a workload: load, lengths, burstiness and prefix sharing measured on the text."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from lodestar_vllm.tokenizer import text_block_hashes
from lodestar_vllm.workloads.types import WorkloadRequest


@dataclass(frozen=True, slots=True)
class WorkloadStats:
    requests: int
    duration_s: float
    rate_per_s: float
    interarrival_cv: float
    prompt_mean: float
    prompt_p50: float
    prompt_p99: float
    prompt_max: int
    output_mean: float
    output_p50: float
    output_p99: float
    sessions: int
    # Fraction of prompt tokens in full blocks some earlier request already sent (an unlimited prefix cache).
    prefix_hit_ratio: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def interarrival_cv(arrivals: np.ndarray) -> float:
    gaps = np.diff(np.sort(arrivals))
    if len(gaps) < 2 or gaps.mean() <= 0:
        return 0.0
    return float(gaps.std() / gaps.mean())


def prefix_hit_ratio(requests: list[WorkloadRequest], block_size: int = 64) -> float:
    """Measured on the synthesised text with vLLM-style chained block hashes, in arrival order."""
    seen: set[int] = set()
    hits = 0
    total = 0
    for request in sorted(requests, key=lambda r: r.arrival_time):
        hashes = text_block_hashes(request.prompt_text(), block_size)
        total += request.prompt_tokens
        for h in hashes:
            if h not in seen:
                break
            hits += block_size
        seen.update(hashes)
    return hits / total if total else 0.0


def workload_stats(
    requests: list[WorkloadRequest], *, block_size: int = 64, measure_sharing: bool = True
) -> WorkloadStats:
    if not requests:
        raise ValueError("workload has no requests")
    arrivals = np.array([r.arrival_time for r in requests])
    prompts = np.array([r.prompt_tokens for r in requests])
    outputs = np.array([r.output_tokens for r in requests])
    duration = float(arrivals.max() - arrivals.min())
    return WorkloadStats(
        requests=len(requests),
        duration_s=duration,
        rate_per_s=(len(requests) - 1) / duration if duration > 0 else float("inf"),
        interarrival_cv=interarrival_cv(arrivals),
        prompt_mean=float(prompts.mean()),
        prompt_p50=float(np.percentile(prompts, 50)),
        prompt_p99=float(np.percentile(prompts, 99)),
        prompt_max=int(prompts.max()),
        output_mean=float(outputs.mean()),
        output_p50=float(np.percentile(outputs, 50)),
        output_p99=float(np.percentile(outputs, 99)),
        sessions=len({r.session_id for r in requests if r.session_id is not None}),
        prefix_hit_ratio=prefix_hit_ratio(requests, block_size) if measure_sharing else None,
    )
