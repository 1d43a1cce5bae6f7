"""The built-in fallback: the least estimated time to first token, with prefix reuse breaking ties.

The estimate is the analytic one of the features (queued prefill tokens in flight plus this request's uncached
tokens, over the engine's observed prefill rate, plus one decode step): prefix affinity, token load and
hardware speed in one number, with no trained model. It serves cold start, out-of-distribution inputs,
shadow mode and the guardrail.
"""

from __future__ import annotations

import numpy as np

from lodestar_vllm.core.features import CandidateFeatures


def fallback_choice(feats: CandidateFeatures, allowed: np.ndarray, tie_tolerance: float) -> int:
    """Index of the fallback's pick among ``allowed`` (a boolean mask over candidates)."""
    est = np.where(allowed, feats.analytic_ttft, np.inf)
    best = est.min()
    near = est <= best * (1.0 + tie_tolerance)
    # Among near-ties: the most cached prefix, then the fewest pending prefill tokens.
    key = np.where(near, feats.matched_tokens - 1e-9 * feats.pending_prefill, -np.inf)
    return int(np.argmax(key))
