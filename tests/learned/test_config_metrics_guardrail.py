"""Config loading, metrics registration, and the guardrail's trip/recover cycle."""

from __future__ import annotations

import importlib

import pytest
from prometheus_client import CollectorRegistry

from lodestar_vllm.core.config import LearnedConfig
from lodestar_vllm.policies.learned.guardrail import Guardrail


def test_config_from_dict_and_env() -> None:
    cfg = LearnedConfig.from_env({"LODESTAR_TRAINER_MODE": "background", "LODESTAR_HIDDEN": "32,32",
                                  "LODESTAR_SHADOW": "true", "LODESTAR_EXPLORE_MIN": "0.02", "OTHER": "x"},
                                 base={"seed": 4})
    assert cfg.trainer_mode == "background" and cfg.hidden == (32, 32) and cfg.shadow is True
    assert cfg.explore_min == 0.02 and cfg.seed == 4
    assert LearnedConfig.from_dict({"known_gpu_classes": ["A", "B"]}).known_gpu_classes == ("A", "B")
    with pytest.raises(ValueError, match="unknown learned-router option"):
        LearnedConfig.from_dict({"trainer_mod": "inline"})
    with pytest.raises(ValueError, match="objective"):
        LearnedConfig(objective="median")
    with pytest.raises(ValueError, match="cannot parse"):
        LearnedConfig.from_env({"LODESTAR_ENSEMBLE": "four"})


def test_metrics_created_once_and_safe_to_reimport() -> None:
    import lodestar_vllm.metrics as metrics

    first = metrics.lodestar_metrics()
    assert metrics.lodestar_metrics() is first
    reloaded = importlib.reload(metrics)  # a second import of the module must not fail on registration
    again = reloaded.lodestar_metrics()
    assert again.decisions is first.decisions
    private = reloaded.lodestar_metrics(CollectorRegistry())
    assert private.decisions is not first.decisions


def test_guardrail_trips_when_model_arm_is_worse_and_recovers() -> None:
    rail = Guardrail(window=40, margin=0.25, cooldown_s=10.0, control_samples=30)
    for i in range(30):
        assert not rail.observe(1.0, control=True, now=float(i) / 10, model_version=1)
    tripped = [rail.observe(1.6, control=False, now=3.0 + i / 100, model_version=1) for i in range(128)]
    assert tripped[-1] and not any(tripped[:-1]) and rail.active and rail.trips == 1
    trip_time = rail.tripped_at
    assert not rail.maybe_recover(now=trip_time + 5, model_version=2)  # a newer model, but the cooldown runs
    assert not rail.maybe_recover(now=trip_time + 12, model_version=1)  # cooldown passed, no newer model yet
    assert rail.maybe_recover(now=trip_time + 12, model_version=2) and not rail.active
    # A model arm within the margin of the control arm never trips.
    for i in range(500):
        assert not rail.observe(1.1, control=False, now=20.0 + i / 100, model_version=2)


def test_guardrail_compares_the_same_period_only() -> None:
    rail = Guardrail(window=40, margin=0.25, cooldown_s=10.0, control_samples=30)
    # A burst of slow model-arm requests long before the control samples does not count against the model.
    for i in range(300):
        rail.observe(10.0, control=False, now=float(i) / 100, model_version=1)
    for i in range(30):
        rail.observe(1.0, control=True, now=100.0 + i, model_version=1)
    assert not any(rail.observe(1.05, control=False, now=100.0 + i / 10, model_version=1) for i in range(300))
    assert not rail.active


def test_guardrail_needs_a_control_arm_before_judging() -> None:
    rail = Guardrail(window=10, margin=0.1, cooldown_s=1.0)
    assert not any(rail.observe(100.0, control=False, now=float(i), model_version=1) for i in range(500))
    assert not rail.active
