"""Adapter configuration: ``--lodestar-*`` flags over ``LODESTAR_*`` environment variables over defaults."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from lodestar_vllm.core.types import HardwareInfo


class SettingsError(ValueError):
    """A flag or environment variable has a value the adapter cannot use."""


@dataclass(frozen=True)
class LodestarSettings:
    policy: str = "learned"
    seed: int = 0
    # Extra keyword arguments for the policy factory (JSON object).
    policy_options: Mapping[str, Any] = field(default_factory=dict)
    scrape_interval: float = 1.0
    scrape_timeout: float = 2.0
    checkpoint_path: str | None = None
    checkpoint_interval: float = 300.0
    # A routed decision that no dispatch claimed within this time is reported as a failed attempt, so the
    # policy's in-flight accounting cannot leak.
    pending_timeout: float = 60.0
    # Explanations kept for /lodestar/explain (oldest dropped first).
    explain_capacity: int = 10_000
    # url -> GPU class, for hosts whose discovery carries no hardware labels.
    hardware: Mapping[str, HardwareInfo] = field(default_factory=dict)
    # Bound on setting up the Kubernetes client at start-up (LODESTAR_K8S_* asked for it); past it the router
    # serves without discovery. Not named k8s_*: any LODESTAR_K8S_* variable turns the awareness on.
    kubernetes_start_timeout: float = 10.0

    @classmethod
    def from_sources(
        cls,
        args: argparse.Namespace | None = None,
        env: Mapping[str, str] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> LodestarSettings:
        """Precedence: flags, then ``config`` (the patched host's --routing-logic-config), then LODESTAR_*."""
        env = os.environ if env is None else env
        config = config or {}
        unknown = set(config) - {f.name for f in fields(cls)}
        if unknown:
            raise SettingsError(f"unknown lodestar setting(s) in routing logic config: {sorted(unknown)}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"LODESTAR_{f.name.upper()}")
            if f.name in config:
                raw = config[f.name]
            if args is not None and getattr(args, f"lodestar_{f.name}", None) is not None:
                raw = getattr(args, f"lodestar_{f.name}")
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, raw)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if not self.policy:
            raise SettingsError("LODESTAR_POLICY / --lodestar-policy must name a policy")
        for name in ("scrape_interval", "scrape_timeout", "checkpoint_interval", "pending_timeout",
                     "kubernetes_start_timeout"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"lodestar {name} must be > 0, got {getattr(self, name)}")
        if self.explain_capacity < 1:
            raise SettingsError("lodestar explain_capacity must be >= 1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--lodestar-*`` flags; each defaults to its LODESTAR_* variable, then to the built-in default."""
    group = parser.add_argument_group("lodestar (learned routing)")
    group.add_argument("--lodestar-policy", help="policy name from lodestar's registry (default: learned)")
    group.add_argument("--lodestar-seed", help="policy seed (default 0)")
    group.add_argument("--lodestar-policy-options", help="JSON object of extra policy options")
    group.add_argument("--lodestar-scrape-interval", help="seconds between engine /metrics scrapes (default 1)")
    group.add_argument("--lodestar-scrape-timeout", help="per-engine scrape timeout in seconds (default 2)")
    group.add_argument("--lodestar-checkpoint-path", help="learned-state checkpoint file (restored at start)")
    group.add_argument("--lodestar-checkpoint-interval", help="seconds between checkpoints (default 300)")
    group.add_argument("--lodestar-pending-timeout", help="seconds before an unclaimed decision is failed")
    group.add_argument("--lodestar-explain-capacity", help="explanations kept for /lodestar/explain")
    group.add_argument("--lodestar-hardware", help="url=GPU_CLASS[,url=GPU_CLASS...] for unlabeled engines")
    group.add_argument("--lodestar-kubernetes-start-timeout",
                       help="seconds to set up Kubernetes discovery before serving without it (default 10)")


def _convert(name: str, raw: Any) -> Any:
    try:
        if name in ("policy", "checkpoint_path"):
            return str(raw)
        if name in ("seed", "explain_capacity"):
            return int(raw)
        if name in ("scrape_interval", "scrape_timeout", "checkpoint_interval", "pending_timeout",
                    "kubernetes_start_timeout"):
            return float(raw)
        if name == "policy_options":
            options = json.loads(raw) if isinstance(raw, str) else dict(raw)
            if not isinstance(options, dict):
                raise ValueError("not a JSON object")
            return options
        if name == "hardware":
            return parse_hardware(raw) if isinstance(raw, str) else dict(raw)
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"lodestar {name}: cannot use {raw!r}: {exc}") from None
    return str(raw)


def parse_hardware(text: str) -> dict[str, HardwareInfo]:
    """``http://a:8000=H100-80GB,http://b:8000=L4`` -> url -> HardwareInfo."""
    result: dict[str, HardwareInfo] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        url, sep, gpu = item.rpartition("=")
        if not sep or not url or not gpu:
            raise ValueError(f"expected url=GPU_CLASS, got {item!r}")
        result[url.rstrip("/")] = HardwareInfo(gpu_class=gpu)
    return result
