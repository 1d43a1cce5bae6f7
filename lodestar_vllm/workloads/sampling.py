"""Random draws the generators share: gamma-renewal arrivals and lengths from fitted quantile tables."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# The percentiles every fitted quantile table is given at (lodestar_vllm.workloads.fit prints tables on these).
# 5% steps catch the steps of real length distributions (Azure conv: 10% of prompts at ~400 tokens); the
# tail points keep p99 and the maximum.
PERCENTILES: tuple[float, ...] = (0, 1, 2.5, *range(5, 100, 5), 97.5, 99, 99.5, 99.9, 100)


def arrival_times(
    rng: np.random.Generator,
    rate: float,
    cv: float,
    *,
    horizon: float | None,
    count: int | None,
    rate_sigma: float = 0.0,
    window_s: float = 30.0,
) -> np.ndarray:
    """Arrival times of a renewal process with mean ``rate`` per second and inter-arrival coefficient of
    variation ``cv`` (gamma gaps; cv=1 is Poisson, cv>1 bursty, cv=0 evenly spaced). Stops at ``horizon``
    seconds or ``count`` arrivals, whichever comes first; at least one of them must be given.

    ``rate_sigma`` > 0 makes the rate swing from one ``window_s`` window to the next (a lognormal multiplier
    of mean 1 per window): real traffic drifts over minutes, which a renewal process alone cannot show."""
    if rate_sigma > 0:
        return _modulated(rng, rate, cv, horizon, count, rate_sigma, window_s)
    if rate <= 0:
        raise ValueError(f"arrival rate must be > 0, got {rate}")
    if cv < 0:
        raise ValueError(f"inter-arrival cv must be >= 0, got {cv}")
    if horizon is None and count is None:
        raise ValueError("arrival_times needs a horizon or a count")
    mean_gap = 1.0 / rate
    batch = count if count is not None else max(16, int(horizon * rate * 1.2) + 16)
    chunks: list[np.ndarray] = []
    last = 0.0
    total = 0
    while True:
        if cv == 0:
            gaps = np.full(batch, mean_gap)
        else:
            shape = 1.0 / (cv * cv)
            gaps = rng.gamma(shape, mean_gap / shape, size=batch)
        times = last + np.cumsum(gaps)
        chunks.append(times)
        total += len(times)
        last = float(times[-1])
        if (count is not None and total >= count) or (horizon is not None and last >= horizon):
            break
    out = np.concatenate(chunks)
    if count is not None:
        out = out[:count]
    if horizon is not None:
        out = out[out < horizon]
    return out


def sample_quantiles(rng: np.random.Generator, table: Sequence[float], size: int) -> np.ndarray:
    """Integer draws (>= 1) from a distribution given by its values at ``PERCENTILES``, interpolating in log
    space between them (lengths are heavy-tailed: linear interpolation would fatten the tail)."""
    if len(table) != len(PERCENTILES):
        raise ValueError(f"quantile table needs {len(PERCENTILES)} values, got {len(table)}")
    logs = np.log(np.maximum(np.asarray(table, dtype=float), 1.0))
    u = rng.uniform(0.0, 100.0, size=size)
    return np.maximum(1, np.rint(np.exp(np.interp(u, PERCENTILES, logs)))).astype(np.int64)


def _modulated(
    rng: np.random.Generator,
    rate: float,
    cv: float,
    horizon: float | None,
    count: int | None,
    sigma: float,
    window_s: float,
) -> np.ndarray:
    # Time change: draw a rate-1 renewal process in "work" time, then map work back to seconds through the
    # cumulative intensity of the piecewise-constant modulated rate. Local burstiness stays ``cv``.
    if window_s <= 0:
        raise ValueError(f"rate window must be > 0 s, got {window_s}")
    if horizon is None and count is None:
        raise ValueError("arrival_times needs a horizon or a count")
    unit_horizon = None if horizon is None else horizon * rate * 4 + 64  # generous: trimmed in seconds below
    work = arrival_times(rng, 1.0, cv, horizon=unit_horizon, count=None if horizon is not None else count)
    windows = max(1, int(np.ceil(work[-1] / (rate * window_s * np.exp(-3 * sigma))))) + 1 if len(work) else 1
    multipliers = rng.lognormal(-sigma * sigma / 2, sigma, size=windows)
    edges_s = np.arange(windows + 1) * window_s
    edges_work = np.concatenate([[0.0], np.cumsum(multipliers * rate * window_s)])
    while len(work) and edges_work[-1] < work[-1]:  # rare: a run of low windows; extend
        extra = rng.lognormal(-sigma * sigma / 2, sigma, size=windows)
        edges_s = np.concatenate([edges_s, edges_s[-1] + np.arange(1, windows + 1) * window_s])
        edges_work = np.concatenate([edges_work, edges_work[-1] + np.cumsum(extra * rate * window_s)])
    out = np.interp(work, edges_work, edges_s)
    if count is not None:
        out = out[:count]
    if horizon is not None:
        out = out[out < horizon]
    return out
