"""Synthetic look-alikes of the public traces: lengths, load, burstiness and prefix sharing fitted to them.

Each request is either a new conversation (its prompt starts with ``shared_prefix`` tokens common to all
requests, then unique text; length from ``prompt_quantiles``) or, with probability ``followup_fraction``, a
follow-up: the whole prompt of an earlier request made ``followup_age`` seconds before (fitted quantiles) plus
``followup_append`` new tokens, as a conversation's next turn resends its history. Arrivals are gamma-renewal
at ``rate`` with coefficient of variation ``cv``, the rate swinging by ``rate_sigma`` from one ``rate_window``
to the next. The fitted figures come from ``python -m
lodestar_vllm.workloads.fit`` (see fitted.py); the traces themselves are never needed.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from lodestar_vllm.workloads.sampling import arrival_times, sample_quantiles
from lodestar_vllm.workloads.text import stable_key
from lodestar_vllm.workloads.types import Segment, WorkloadRequest


@dataclass(frozen=True, slots=True)
class TraceLikeParams:
    name: str  # the workload name; also the namespace of its text keys and request ids
    source: str
    summary: str
    rate: float  # requests per second
    cv: float  # inter-arrival coefficient of variation
    duration: float  # seconds; the default span when neither duration nor max_requests is asked for
    prompt_quantiles: tuple[float, ...]  # new conversations' prompt tokens at sampling.PERCENTILES
    output_quantiles: tuple[float, ...]
    max_prompt: int
    shared_prefix: int = 0  # tokens every request starts with
    followup_fraction: float = 0.0
    followup_age_quantiles: tuple[float, ...] = ()  # seconds back to the parent request
    followup_append_quantiles: tuple[float, ...] = ()  # new tokens on top of the parent's prompt
    rate_sigma: float = 0.0  # the rate swings by a lognormal factor per rate_window (sampling.arrival_times)
    rate_window: float = 30.0

    def validate(self) -> None:
        if self.rate <= 0 or self.cv < 0 or self.duration <= 0 or self.rate_sigma < 0 or self.rate_window <= 0:
            raise ValueError("need rate > 0, cv >= 0, duration > 0, rate_sigma >= 0, rate_window > 0")
        if not 0.0 <= self.followup_fraction <= 1.0:
            raise ValueError(f"followup_fraction must be in [0, 1], got {self.followup_fraction}")
        if self.followup_fraction > 0 and not (self.followup_age_quantiles and self.followup_append_quantiles):
            raise ValueError("follow-ups need age and append quantiles")


def generate_trace_like(
    params: TraceLikeParams, *, seed: int, horizon: float | None, count: int | None
) -> list[WorkloadRequest]:
    params.validate()
    rng = np.random.default_rng([seed, 3])
    if horizon is None and count is None:
        horizon = params.duration
    times = arrival_times(
        rng, params.rate, params.cv, horizon=horizon, count=count,
        rate_sigma=params.rate_sigma, window_s=params.rate_window,
    )
    n = len(times)
    prompts = np.minimum(sample_quantiles(rng, params.prompt_quantiles, n), params.max_prompt)
    outputs = sample_quantiles(rng, params.output_quantiles, n)
    is_followup = rng.uniform(size=n) < params.followup_fraction
    if params.followup_fraction > 0:
        ages = sample_quantiles(rng, params.followup_age_quantiles, n)
        appends = sample_quantiles(rng, params.followup_append_quantiles, n)
    name = params.name
    shared: Segment | None = (stable_key(name, "shared", seed), params.shared_prefix) if params.shared_prefix else None
    out: list[WorkloadRequest] = []
    for i in range(n):
        t = float(times[i])
        parent = None
        if is_followup[i] and (target := t - float(ages[i])) >= 0 and out:
            j = bisect.bisect_left(times, target, hi=i)
            if j == i or (j > 0 and target - times[j - 1] < times[j] - target):
                j -= 1
            candidate = out[j]
            if candidate.prompt_tokens + int(appends[i]) <= params.max_prompt:
                parent = candidate
        unique_key = stable_key(name, "request", seed, i)
        if parent is not None:
            segments = (*parent.segments, (unique_key, int(appends[i])))
            session = parent.session_id
        elif shared is not None and prompts[i] > shared[1]:
            segments = (shared, (unique_key, int(prompts[i]) - shared[1]))
            session = f"{name}-conv-{i}"
        else:
            segments = ((unique_key, int(prompts[i])),)
            session = f"{name}-conv-{i}"
        out.append(
            WorkloadRequest(
                request_id=f"{name}-{i}",
                arrival_time=t,
                prompt_tokens=sum(tokens for _, tokens in segments),
                output_tokens=int(outputs[i]),
                session_id=session if params.followup_fraction > 0 else None,
                segments=segments,
            )
        )
    return out
