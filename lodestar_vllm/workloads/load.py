"""``load_workload``: resolve a name, produce requests, then jitter, scale, order and truncate them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from lodestar_vllm.workloads.catalog import read_trace, resolve, trace_path
from lodestar_vllm.workloads.types import WorkloadRequest


def load_workload(
    name_or_path: str,
    *,
    seed: int = 0,
    rate_scale: float = 1.0,
    duration: float | None = None,
    max_requests: int | None = None,
    jitter: float | None = None,
) -> list[WorkloadRequest]:
    """Requests sorted by arrival time, deterministic for ``seed``.

    ``rate_scale`` > 1 compresses time (arrival_time / rate_scale: more load); ``duration`` keeps arrivals
    before that many (scaled) seconds; ``max_requests`` keeps the earliest that many; ``jitter`` adds uniform
    [0, jitter) seconds of noise to each timestamp in trace time (before scaling), which spreads bucketed
    timestamps over their bucket. ``jitter=None`` means the workload's default: ~3 s for Mooncake traces (its
    timestamp bucket), 0 otherwise.
    """
    if rate_scale <= 0:
        raise ValueError(f"rate_scale must be > 0, got {rate_scale}")
    if duration is not None and duration <= 0:
        raise ValueError(f"duration must be > 0, got {duration}")
    if max_requests is not None and max_requests < 1:
        raise ValueError(f"max_requests must be >= 1, got {max_requests}")
    if jitter is not None and jitter < 0:
        raise ValueError(f"jitter must be >= 0, got {jitter}")
    name, entry = resolve(name_or_path)
    horizon = None if duration is None else duration * rate_scale
    if entry.generator is not None:
        # Jitter only delays arrivals, so generating up to the horizon misses nothing inside it.
        requests = entry.generator(entry.params, seed=seed, horizon=horizon, count=max_requests)
        default_jitter = entry.default_jitter
    else:
        requests, default_jitter = read_trace(trace_path(entry), name)
    return _shape(requests, seed, rate_scale, duration, max_requests, default_jitter if jitter is None else jitter)


def _shape(
    requests: list[WorkloadRequest],
    seed: int,
    rate_scale: float,
    duration: float | None,
    max_requests: int | None,
    jitter: float,
) -> list[WorkloadRequest]:
    arrivals = np.array([r.arrival_time for r in requests], dtype=float)
    if jitter > 0:
        arrivals = arrivals + np.random.default_rng([seed, 7]).uniform(0.0, jitter, size=len(arrivals))
    arrivals /= rate_scale
    order = np.argsort(arrivals, kind="stable")
    if duration is not None:
        order = order[arrivals[order] < duration]
    if max_requests is not None:
        order = order[:max_requests]
    return [
        r if r.arrival_time == t else replace(r, arrival_time=t)
        for r, t in ((requests[i], float(arrivals[i])) for i in order)
    ]
