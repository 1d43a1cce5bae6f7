"""Checkpoints: the model, its normalisation, the feature schema and per-GPU-class rates, as one small blob.

Layout: ``MAGIC`` + sha256(payload) + payload, where payload = zlib(npz(arrays + JSON meta)). Per-url rates
are deliberately absent (urls change across restarts and replicas); per-GPU-class rates transfer. A blob whose
magic, checksum, schema version or feature names do not match is refused with ``CheckpointError`` (the caller
logs it and keeps routing with what it has). No pickle anywhere: loading a blob cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from lodestar_vllm.core.predictor import ModelWeights

MAGIC = b"LODESTAR-CKPT-1\n"
_DIGEST = 32


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here (corrupt, foreign, or a different feature schema)."""


def encode(model: ModelWeights, *, schema_version: int, feature_names: tuple[str, ...],
           gpu_class_rates: dict[str, dict[str, float]], extra: dict[str, Any] | None = None) -> bytes:
    arrays: dict[str, np.ndarray] = {"mean": model.mean.astype(np.float32), "std": model.std.astype(np.float32)}
    if model.lo is not None and model.hi is not None:
        arrays["lo"] = model.lo.astype(np.float32)
        arrays["hi"] = model.hi.astype(np.float32)
    for i, (w, b) in enumerate(model.layers):
        arrays[f"w{i}"] = w.astype(np.float32)
        arrays[f"b{i}"] = b.astype(np.float32)
    meta = {
        "schema_version": schema_version,
        "feature_names": list(feature_names),
        "objective": model.objective,
        "layers": len(model.layers),
        "version": model.version,
        "trained_samples": model.trained_samples,
        "created_at": model.created_at,
        "holdout_loss": None if model.holdout_loss != model.holdout_loss else model.holdout_loss,
        "gpu_class_rates": gpu_class_rates,
        "extra": extra or {},
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    payload = zlib.compress(buf.getvalue(), level=6)
    return MAGIC + hashlib.sha256(payload).digest() + payload


def decode(blob: bytes, *, schema_version: int, feature_names: tuple[str, ...]
           ) -> tuple[ModelWeights, dict[str, Any]]:
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise CheckpointError(f"checkpoint must be bytes, got {type(blob).__name__}")
    blob = bytes(blob)
    if not blob.startswith(MAGIC):
        raise CheckpointError("not a lodestar checkpoint (bad magic)")
    digest = blob[len(MAGIC) : len(MAGIC) + _DIGEST]
    payload = blob[len(MAGIC) + _DIGEST :]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError("checkpoint checksum mismatch (truncated or corrupt)")
    try:
        with np.load(io.BytesIO(zlib.decompress(payload)), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (zlib.error, ValueError, KeyError, OSError) as exc:
        raise CheckpointError(f"checkpoint unreadable: {exc}") from None
    if meta.get("schema_version") != schema_version:
        raise CheckpointError(f"feature schema version {meta.get('schema_version')} != expected {schema_version}")
    if tuple(meta.get("feature_names", ())) != tuple(feature_names):
        raise CheckpointError("feature names differ from this router's (different GPU classes or schema)")
    try:
        layers = [(arrays[f"w{i}"].astype(np.float64), arrays[f"b{i}"].astype(np.float64))
                  for i in range(int(meta["layers"]))]
        model = ModelWeights(mean=arrays["mean"].astype(np.float64), std=arrays["std"].astype(np.float64),
                             layers=layers, lo=arrays["lo"].astype(np.float64) if "lo" in arrays else None,
                             hi=arrays["hi"].astype(np.float64) if "hi" in arrays else None,
                             objective=str(meta["objective"]), version=int(meta["version"]),
                             trained_samples=int(meta["trained_samples"]), created_at=float(meta["created_at"]),
                             holdout_loss=float(meta["holdout_loss"]) if meta.get("holdout_loss") is not None
                             else float("nan"))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint incomplete: {exc}") from None
    if model.width != len(feature_names) or layers[0][0].shape[1] != len(feature_names):
        raise CheckpointError("checkpoint input width does not match the feature schema")
    for (w, b), (w_next, _) in zip(layers, [*layers[1:], (None, None)], strict=True):
        if w.ndim != 3 or b.shape != (w.shape[0], w.shape[2]) or (w_next is not None and w_next.shape[1] != w.shape[2]):
            raise CheckpointError("checkpoint layer shapes are inconsistent")
    if layers[-1][0].shape[2] != 1:
        raise CheckpointError("checkpoint output layer must have one output")
    if not model.is_finite():
        raise CheckpointError("checkpoint holds non-finite weights")
    return model, meta


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write-then-rename in the target directory: readers see the old file or the new one, never half."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        # mkstemp makes 0600; replicas and sidecars reading the shared file need the usual 0644. (Reading the
        # umask would mean setting it, which is process-wide and racy.)
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
