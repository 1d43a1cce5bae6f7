"""Checkpoints: round trip, atomic save/load, refusal of corrupt or mismatched blobs."""

from __future__ import annotations

import numpy as np

from lodestar_vllm.core import checkpoint
from lodestar_vllm.core.features import SCHEMA_VERSION
from lodestar_vllm.policies.learned import LearnedPolicy
from tests.learned.conftest import FAST, ToyFleet, drive


def _trained() -> tuple[LearnedPolicy, ToyFleet]:
    fleet = ToyFleet([20000.0, 5000.0, 5000.0], gpus=["H100", "L4", "L4"])
    policy = LearnedPolicy(seed=0, **FAST)
    drive(policy, fleet, 200)
    assert policy.model is not None
    return policy, fleet


def test_round_trip_gives_same_predictions_and_warm_starts(tmp_path) -> None:
    policy, fleet = _trained()
    blob = policy.export_checkpoint()
    assert len(blob) < 1 << 20
    fresh = LearnedPolicy(seed=5, **FAST)
    assert fresh.import_checkpoint(blob)
    x = np.random.default_rng(0).normal(size=(5, fresh.features.width))
    a = checkpoint.decode(blob, schema_version=SCHEMA_VERSION, feature_names=fresh.features.names)[0]
    from lodestar_vllm.core.predictor import predict
    np.testing.assert_allclose(predict(a, x)[0], predict(policy.model, x)[0], rtol=1e-4, atol=1e-4)
    assert a.version == policy.model.version and abs(a.holdout_loss - policy.model.holdout_loss) < 1e-9
    # Per-GPU-class rates travel; per-url ones do not.
    assert fresh.rates.export_classes().keys() == policy.rates.export_classes().keys()
    assert fresh.status()["rates"]["per_url"] == {}
    # Warm start: the very first decision already uses the model.
    req, _ = fleet.request()
    assert str(fresh.route(req, fleet.views(), fleet.now).path) in {"model", "exploration"}

    path = tmp_path / "sub" / "model.ckpt"
    policy.save_checkpoint(path)
    assert path.read_bytes() == blob and not list(path.parent.glob(".model.ckpt.*"))
    assert LearnedPolicy(seed=1, **FAST).load_checkpoint(path)


def test_corrupt_and_mismatched_checkpoints_are_refused(tmp_path, caplog) -> None:
    policy, fleet = _trained()
    blob = policy.export_checkpoint()
    flipped = bytearray(blob)
    flipped[-10] ^= 0xFF
    wrong_schema = checkpoint.encode(policy.model, schema_version=SCHEMA_VERSION + 1,
                                     feature_names=policy.features.names, gpu_class_rates={})
    target = LearnedPolicy(seed=0, **FAST)
    for bad in (b"", b"garbage", bytes(flipped), blob[: len(blob) // 2], wrong_schema):
        assert target.import_checkpoint(bad) is False
    # Another GPU-class list is another feature schema.
    other = LearnedPolicy(seed=0, known_gpu_classes=("H100", "L4"), **FAST)
    assert other.import_checkpoint(blob) is False
    # Another objective is refused too.
    assert LearnedPolicy(seed=0, objective="quantile", **FAST).import_checkpoint(blob) is False
    assert target.load_checkpoint(tmp_path / "missing.ckpt") is False
    assert "checkpoint refused" in caplog.text
    # Refusal leaves the router routing, on the fallback.
    assert target.model is None
    req, _ = fleet.request()
    decision = target.route(req, fleet.views(), fleet.now)
    assert decision.reason == "cold_start"
