"""The Lodestar paper's synthetic prefix-sharing workload.

Requests fall into ``groups`` (think: applications), each with its own system prompt. A request's prompt is
``uniform(min_prompt, max_prompt)`` tokens long; its first ``round(sharing * length)`` tokens are a prefix of
its group's system prompt and the rest is unique to it, so ``sharing`` is the fraction of prompt tokens that
are a shared prefix (0 to ~0.7 in the paper). ``system_prompt`` > 0 fixes the shared length instead (every
request starts with that many tokens of its group's prompt, whatever its length). Arrivals are gamma-renewal at ``rate`` with inter-arrival
coefficient of variation ``cv`` (1 = Poisson, > 1 bursty). Groups are drawn with Zipf-like popularity
(``group_skew`` 0 = uniform) because real system prompts are not equally popular.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lodestar_vllm.workloads.sampling import arrival_times
from lodestar_vllm.workloads.text import stable_key
from lodestar_vllm.workloads.types import WorkloadRequest


@dataclass(frozen=True, slots=True)
class PrefixSharingParams:
    sharing: float = 0.5
    system_prompt: int = 0  # > 0: a fixed shared length in tokens, overriding ``sharing``
    groups: int = 8
    group_skew: float = 0.0
    min_prompt: int = 1024
    max_prompt: int = 8192
    output_mean: int = 100
    output_spread: int = 20  # outputs uniform in output_mean +- output_spread
    rate: float = 8.0  # requests per second
    cv: float = 1.0
    num_requests: int = 2000  # when neither duration nor max_requests is asked for

    def validate(self) -> None:
        if not 0.0 <= self.sharing < 1.0:
            raise ValueError(f"sharing must be in [0, 1), got {self.sharing}")
        if not 0 <= self.system_prompt < self.min_prompt:
            raise ValueError(f"system_prompt must be in [0, min_prompt), got {self.system_prompt}")
        if self.groups < 1 or not 1 <= self.min_prompt <= self.max_prompt:
            raise ValueError("need groups >= 1 and 1 <= min_prompt <= max_prompt")
        if not 0 <= self.output_spread < self.output_mean:
            raise ValueError("need 0 <= output_spread < output_mean")


def generate_prefix_sharing(
    params: PrefixSharingParams, *, seed: int, horizon: float | None, count: int | None
) -> list[WorkloadRequest]:
    params.validate()
    rng = np.random.default_rng([seed, 1])
    if horizon is None and count is None:
        count = params.num_requests
    times = arrival_times(rng, params.rate, params.cv, horizon=horizon, count=count)
    n = len(times)
    weights = 1.0 / np.arange(1, params.groups + 1) ** params.group_skew
    groups = rng.choice(params.groups, size=n, p=weights / weights.sum())
    lengths = rng.integers(params.min_prompt, params.max_prompt + 1, size=n)
    outputs = rng.integers(params.output_mean - params.output_spread, params.output_mean + params.output_spread + 1, size=n)
    # Group prompts depend on the seed too: two seeds are two different sets of applications.
    group_keys = [stable_key("prefix-sharing-group", seed, g) for g in range(params.groups)]
    out = []
    for i in range(n):
        length = int(lengths[i])
        shared = params.system_prompt or min(length - 1, round(params.sharing * length))
        unique = (stable_key("prefix-sharing-request", seed, i), length - shared)
        segments = ((group_keys[groups[i]], shared), unique) if shared > 0 else (unique,)
        out.append(
            WorkloadRequest(
                request_id=f"prefix-sharing-{i}",
                arrival_time=float(times[i]),
                prompt_tokens=length,
                output_tokens=int(outputs[i]),
                segments=segments,
            )
        )
    return out
