"""Fixtures for the production-stack adapter tests: a fresh runtime per test, and host detection."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from lodestar_vllm.integrations.production_stack import runtime as runtime_mod


def host_available() -> tuple[bool, str]:
    """production-stack's router importable? The unrelated PyPI `vllm-router` (Rust) has no routing_logic."""
    if importlib.util.find_spec("vllm_router") is None:
        return False, "production-stack router (vllm_router) not installed: see docs/production-stack.md"
    if importlib.util.find_spec("vllm_router.routers.routing_logic") is None:
        return False, "the installed vllm_router is not production-stack's (no vllm_router.routers.routing_logic)"
    return True, ""


def require_host() -> None:
    ok, reason = host_available()
    if not ok:
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def _fresh_runtime() -> Iterator[None]:
    runtime_mod.clear_runtime()
    yield
    runtime_mod.clear_runtime()
