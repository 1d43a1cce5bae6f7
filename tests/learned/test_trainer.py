"""The online trainer: swap only when no worse, reject non-finite fits, survive its own death."""

from __future__ import annotations

import time

import numpy as np
import pytest

from lodestar_vllm.core.config import LearnedConfig
from lodestar_vllm.core.predictor import ModelWeights, fit, loss, predict_heads
from lodestar_vllm.core.trainer import OnlineTrainer, SampleBuffer
from lodestar_vllm.policies.learned import LearnedPolicy
from tests.learned.conftest import FAST, ToyFleet, drive

WIDTH = 28  # feature schema width with the default GPU classes


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, WIDTH))
    y = 0.5 * x[:, 0] - 0.3 * x[:, 4] + x[:, 16] + 0.01 * rng.normal(size=n)
    return x, y


def _constant_model(offset: float) -> ModelWeights:
    """Predicts analytic + ``offset`` for every input (bias only)."""
    w0 = np.zeros((1, WIDTH, 2))
    b0 = np.zeros((1, 2))
    w1 = np.zeros((1, 2, 1))
    b1 = np.full((1, 1), offset)
    return ModelWeights(mean=np.zeros(WIDTH), std=np.ones(WIDTH), layers=[(w0, b0), (w1, b1)])


def test_fit_learns_a_simple_function() -> None:
    x, y = _data(600)
    model = fit(x[:500], y[:500], objective="mean", hidden=(32, 32), heads=3, steps=300, batch_size=128,
                learning_rate=3e-3, weight_decay=0.0, seed=0)
    pred = predict_heads(model, x[500:]).mean(axis=0)
    base = loss("mean", x[500:, 16], y[500:])
    assert model.is_finite() and loss("mean", pred, y[500:]) < 0.2 * base


def test_swap_only_when_better_and_nan_rejected() -> None:
    cfg = LearnedConfig(first_fit_samples=50, refit_every_samples=50, trainer_mode="inline")
    queue = [_constant_model(0.0), _constant_model(2.0), _constant_model(float("nan"))]
    trainer = OnlineTrainer(cfg, seed=0, fit_fn=lambda *a, **k: queue.pop(0))
    rng = np.random.default_rng(1)
    for _ in range(150):
        x = rng.normal(size=WIDTH)
        trainer.add(x, float(x[16]), bucket=0)  # the analytic column is exactly right: offset 0 is best
    s = trainer.stats
    assert s.runs == 3 and s.accepted == 1 and s.rejected_worse == 1 and s.rejected_nonfinite == 1
    assert trainer.current is not None and trainer.current.version == 1
    assert float(trainer.current.layers[-1][1][0, 0]) == 0.0


def test_fit_exception_is_counted_and_routing_goes_on() -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    policy = LearnedPolicy(seed=0, **FAST)
    policy.trainer.fit_fn = broken
    results = drive(policy, ToyFleet([10000.0, 5000.0]), 200)
    assert len(results) == 200 and policy.trainer.stats.failures >= 2
    assert policy.model is None and all(path == "fallback" for _, path, _ in results)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_background_trainer_death_restarts_and_routes() -> None:
    calls = {"n": 0}

    def dies_first(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise SystemExit("trainer thread killed")  # BaseException: escapes the fit guard, ends the thread
        return fit(*args, **kwargs)

    policy = LearnedPolicy(seed=0, **{**FAST, "trainer_mode": "background", "refit_every_s": 0.05})
    policy.trainer.fit_fn = dies_first
    fleet = ToyFleet([10000.0, 5000.0])
    try:
        drive(policy, fleet, 80)
        deadline = time.monotonic() + 20.0
        while policy.trainer.stats.restarts == 0 and time.monotonic() < deadline:
            drive(policy, fleet, 5)  # outcomes run the watchdog
            time.sleep(0.02)
        assert policy.trainer.stats.restarts >= 1
        while policy.model is None and time.monotonic() < deadline:
            drive(policy, fleet, 60)
            time.sleep(0.05)
        assert policy.model is not None  # the restarted thread trained
        assert len(drive(policy, fleet, 10)) == 10
    finally:
        policy.close()


def test_sample_buffer_is_bounded_and_keeps_old_regimes() -> None:
    buf = SampleBuffer(recent=100, per_bucket=20, seed=0, max_buckets=4)
    for i in range(5000):
        buf.add(np.array([float(i)]), float(i), bucket=i // 1000)  # five regimes in sequence
    assert len(buf.recent) == 100 and buf.replay_size <= 4 * 20 + 20
    x, _, _, _ = buf.dataset(0.2)
    assert x[:, 0].min() < 1000  # the first regime is still represented
