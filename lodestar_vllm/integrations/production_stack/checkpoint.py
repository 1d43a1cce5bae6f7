"""Learned state on disk: restored at start, written periodically and at shutdown.

The snapshot is taken on the event loop (the policy is only touched there) and written from a worker thread,
atomically (temp file + rename), so neither a slow disk nor a crash mid-write can corrupt the last good file.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
from pathlib import Path
from typing import Any

from lodestar_vllm.core.checkpoint import write_atomic
from lodestar_vllm.policies.base import RoutingPolicy

logger = logging.getLogger(__name__)


def supports_checkpoints(policy: RoutingPolicy) -> bool:
    return hasattr(policy, "export_checkpoint") or hasattr(policy, "save_checkpoint")


def restore(policy: RoutingPolicy, path: str) -> bool:
    """Load ``path`` into the policy when both exist.

    A checkpoint the policy refuses (corrupt, other feature schema or objective) does not stop the router: it
    is moved aside to ``<path>.refused-<n>`` (so the next periodic save cannot overwrite it: nothing is lost
    for a post-mortem), the refusal is logged with the reason (the policy also counts it in
    ``lodestar_checkpoint_refused_total``) and routing starts cold, on the fallback rule.
    """
    if not Path(path).exists():
        logger.info("lodestar: no checkpoint at %s, starting cold", path)
        return False
    if not hasattr(policy, "load_checkpoint"):
        logger.warning("lodestar: policy %r cannot load checkpoints; ignoring %s", policy.name, path)
        return False
    loaded = policy.load_checkpoint(path)  # type: ignore[attr-defined]
    if loaded is False:  # the learned policy refuses mismatched checkpoints (and says why in its log)
        kept = _move_aside(Path(path))
        logger.error(
            "lodestar: checkpoint %s was refused by policy %r; kept as %s, starting cold (fallback routing)",
            path, policy.name, kept,
            extra={"event": "checkpoint_refused", "path": path, "kept_as": str(kept)},
        )
        return False
    logger.info("lodestar: restored learned state from %s", path)
    return True


def _move_aside(path: Path) -> Path:
    for n in range(1, 1000):
        target = path.with_name(f"{path.name}.refused-{n}")
        if not target.exists():
            path.rename(target)
            return target
    raise RuntimeError(f"too many refused checkpoints next to {path}")


def _snapshot(policy: RoutingPolicy) -> Any | None:
    try:
        return policy.export_checkpoint()  # type: ignore[attr-defined]
    except RuntimeError as exc:  # the learned policy has nothing to export before its first model
        logger.info("lodestar: no checkpoint written: %s", exc)
        return None


async def save(policy: RoutingPolicy, path: str) -> bool:
    """Write a checkpoint; False when the policy had nothing to save yet."""
    if hasattr(policy, "export_checkpoint"):
        snapshot = _snapshot(policy)
        if snapshot is None:
            return False
        await asyncio.to_thread(_write_atomically, path, snapshot)
        return True
    if hasattr(policy, "save_checkpoint"):
        await asyncio.to_thread(policy.save_checkpoint, path)  # type: ignore[attr-defined]
        return True
    return False


def save_blocking(policy: RoutingPolicy, path: str) -> bool:
    """For shutdown paths without a running loop."""
    if hasattr(policy, "export_checkpoint"):
        snapshot = _snapshot(policy)
        if snapshot is None:
            return False
        _write_atomically(path, snapshot)
        return True
    if hasattr(policy, "save_checkpoint"):
        policy.save_checkpoint(path)  # type: ignore[attr-defined]
        return True
    return False


def _write_atomically(path: str, snapshot: Any) -> None:
    data = snapshot if isinstance(snapshot, bytes | bytearray) else pickle.dumps(snapshot)
    write_atomic(path, bytes(data))
