"""Refit cadence: early on a refit comes once the data doubled (a low-rate trace must not run on its
first model for most of the run), then every ``refit_every_samples``."""

from __future__ import annotations

import numpy as np

from lodestar_vllm.core.config import LearnedConfig
from lodestar_vllm.core.trainer import OnlineTrainer
from tests.learned.test_trainer import WIDTH, _constant_model


def test_refits_at_half_growth_then_at_the_fixed_cadence() -> None:
    cfg = LearnedConfig(first_fit_samples=200, refit_every_samples=400, trainer_mode="inline")
    fits_at: list[int] = []

    def fit_fn(x, *args, **kwargs):
        fits_at.append(trainer.stats.samples_seen)
        return _constant_model(0.0)

    trainer = OnlineTrainer(cfg, seed=0, fit_fn=fit_fn)
    rng = np.random.default_rng(0)
    for _ in range(3000):
        x = rng.normal(size=WIDTH)
        trainer.add(x, float(x[16]), bucket=0)
    # first fit at 200; then once the samples doubled (200 -> 400), then every 400 (the cap)
    assert fits_at == [200, 400, 800, 1200, 1600, 2000, 2400, 2800]
