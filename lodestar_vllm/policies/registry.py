"""Policy names -> constructors, resolved lazily so that importing the registry stays cheap.

Each entry is ``"module:attribute"``; the attribute is a ``RoutingPolicy`` subclass (or factory) taking
keyword arguments ``seed: int`` plus policy-specific options.
"""

from __future__ import annotations

import importlib
from typing import Any

from lodestar_vllm.policies.base import RoutingPolicy

POLICIES: dict[str, str] = {
    # filled in by lodestar_vllm.policies.heuristics and .learned
}


def register(name: str, target: str) -> None:
    POLICIES[name] = target


def policy_names() -> list[str]:
    _load_builtin()
    return sorted(POLICIES)


def create_policy(name: str, **kwargs: Any) -> RoutingPolicy:
    _load_builtin()
    try:
        target = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(sorted(POLICIES))}") from None
    module_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory(**kwargs)


def _load_builtin() -> None:
    # Modules register their names on import; a missing optional module simply registers nothing.
    for module_name in ("lodestar_vllm.policies.heuristics", "lodestar_vllm.policies.learned"):
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
