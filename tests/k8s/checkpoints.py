"""Checkpoints in the learned policy's own wire format, for the sharing tests and measurements."""

from __future__ import annotations

import numpy as np

from lodestar_vllm.core import checkpoint
from lodestar_vllm.core.predictor import ModelWeights
from lodestar_vllm.policies.learned.policy import SCHEMA_VERSION, LearnedPolicy


def learned_checkpoint(heads: int, hidden: tuple[int, ...], seed: int = 0) -> bytes:
    """A checkpoint in the learned policy's own format with random (incompressible, like trained) weights."""
    policy = LearnedPolicy(seed=seed)
    names = policy.features.names
    rng = np.random.default_rng(seed)
    sizes = [len(names), *hidden, 1]
    layers = [(rng.standard_normal((heads, a, b)).astype(np.float32), rng.standard_normal((heads, b)).astype(np.float32))
              for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    model = ModelWeights(mean=np.zeros(len(names)), std=np.ones(len(names)), layers=layers,
                         lo=np.zeros(len(names)), hi=np.ones(len(names)), version=1, trained_samples=1000)
    blob = checkpoint.encode(model, schema_version=SCHEMA_VERSION, feature_names=names, gpu_class_rates={},
                             extra={"objective": "mean"})
    policy.close()
    return blob
