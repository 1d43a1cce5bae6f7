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


def test_guardrail_trips_when_model_path_is_worse_and_recovers() -> None:
    rail = Guardrail(window=20, margin=0.25, cooldown_s=10.0)
    for _ in range(50):
        rail.observe_calibration(1.0, 1.0)  # the analytic estimate is calibrated
    tripped = [rail.observe_model_outcome(2.0, 1.0, now=float(i), model_version=1) for i in range(20)]
    assert tripped[-1] and rail.active and rail.trips == 1
    assert not rail.maybe_recover(now=22.0, model_version=2)  # a newer model, but the cooldown runs
    assert not rail.maybe_recover(now=30.0, model_version=1)  # cooldown passed, but no newer model yet
    assert rail.maybe_recover(now=30.0, model_version=2) and not rail.active
    for i in range(40):
        assert not rail.observe_model_outcome(1.05, 1.0, now=30.0 + i, model_version=2)
