"""One typed configuration for the learned router, with defaults that work out of the box.

Loadable from a dict (``LearnedConfig.from_dict``) or from ``LODESTAR_*`` environment variables
(``LearnedConfig.from_env``); hosts map their own flags onto these field names. Every field is documented in
docs/learned-router.md.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OBJECTIVES = ("mean", "quantile", "e2e", "slo")
TRAINER_MODES = ("inline", "background", "off")


@dataclass(slots=True)
class LearnedConfig:
    # --- prefix index -------------------------------------------------------------------------------------
    # Router-side block size in tokens; the engine's own block size may be unknown or differ.
    index_block_tokens: int = 32
    # Capacity (router blocks) per engine when its /metrics does not carry num_gpu_blocks x block_size.
    index_default_capacity_blocks: int = 8192
    # Hard cap over all engines together, whatever the engines report (bounds memory).
    index_max_total_blocks: int = 2_000_000
    # Half-life (s) of the freshness weight of a matched prefix: older entries are likelier evicted.
    freshness_half_life_s: float = 15.0
    # --- ledger -------------------------------------------------------------------------------------------
    ledger_max_records: int = 100_000
    ledger_ttl_s: float = 900.0
    # Each entry holds the decision's feature matrix (candidates x 28 floats): 512 x 64 engines ~ 7 MiB.
    explain_ring_size: int = 512
    # Output tokens assumed in flight for a request without max_tokens.
    default_decode_tokens: int = 128
    # --- online hardware rates (EWMA per url and per GPU class) -------------------------------------------
    rate_ewma_alpha: float = 0.1
    prior_prefill_tokens_per_s: float = 8000.0
    prior_decode_step_s: float = 0.02
    # Prefill-rate samples need this much uncached work to say something about throughput.
    rate_min_tokens: int = 128
    known_gpu_classes: tuple[str, ...] = ("A100", "H100", "H200", "A30", "V100", "L4", "L40S", "A10G", "A40")
    # --- predictor ----------------------------------------------------------------------------------------
    objective: str = "mean"
    quantile: float = 0.9
    slo_ttft_s: float = 1.0
    hidden: tuple[int, ...] = (64, 64)
    ensemble: int = 4
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    train_steps: int = 300
    # Refits start from the current weights, so they need fewer steps.
    warm_train_steps: int = 100
    # --- trainer ------------------------------------------------------------------------------------------
    trainer_mode: str = "inline"
    first_fit_samples: int = 200
    refit_every_samples: int = 400
    # Background mode also refits on time when enough new samples arrived.
    refit_every_s: float = 10.0
    recent_window: int = 4000
    replay_per_bucket: int = 250
    holdout_fraction: float = 0.2
    # A new model must not be worse than the current one on held-out recent samples by more than this.
    accept_tolerance: float = 0.02
    # --- decision -----------------------------------------------------------------------------------------
    # Score = predicted mean + uncertainty_weight x ensemble spread (both in log TTFT).
    uncertainty_weight: float = 0.5
    # Prefix preference: a candidate holding a fraction f of the prompt wins on reuse while predicted within
    # (1 + 0.03 + tie_tolerance x f) x the best; its cache hit also spares capacity for later requests, which a
    # per-request TTFT prediction does not see. Measured (mean TTFT s, 3x-idle load): a flat margin of 0.03
    # gave 14.3 on paper-homogeneous (aibrix 4.1); a flat 1.0 gave 2.6 there but 17.5 on heterogeneous
    # Mooncake (llm-d 14.0); scaled by f, 1.0 gives 3.4 and 13.4.
    tie_tolerance: float = 1.0
    explore_initial: float = 0.1
    explore_min: float = 0.01
    # Exploration decays as 1 / (1 + samples / explore_decay_samples).
    explore_decay_samples: float = 2000.0
    # Exploration picks among candidates predicted within this factor of the best (never a wild guess).
    explore_margin: float = 0.3
    # A candidate whose features lie further outside the training range than this many range widths is out
    # of distribution: the model does not judge it (the fallback decides when its own pick is such a one).
    ood_range_margin: float = 1.0
    # --- locality guard -----------------------------------------------------------------------------------
    # Measured on paper-heterogeneous at 3x-idle load: a guard that fires at 0.9 mean KV usage hurts (the fleet
    # sits there under load), so by default it fires only when the caches are truly full.
    guard_kv_threshold: float = 0.98
    guard_candidates: int = 2
    # A prefix group (first blocks of the prompt) is hot when seen this often in the recent window.
    guard_hot_count: int = 16
    guard_window: int = 512
    # --- guardrail (learned path vs fallback) -------------------------------------------------------------
    # A randomised control arm: this fraction of trusted-model requests is routed by the fallback, so the
    # model arm can be compared with the fallback under the same load.
    guardrail_control_fraction: float = 0.05
    # Model-arm samples needed in the control arm's time span before the guardrail judges.
    guardrail_window: int = 200
    guardrail_control_samples: int = 60
    guardrail_margin: float = 0.5
    guardrail_cooldown_s: float = 60.0
    # --- misc ---------------------------------------------------------------------------------------------
    shadow: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.trainer_mode not in TRAINER_MODES:
            raise ValueError(f"trainer_mode must be one of {TRAINER_MODES}, got {self.trainer_mode!r}")
        positive = ("index_block_tokens", "index_default_capacity_blocks", "index_max_total_blocks",
                    "ledger_max_records", "explain_ring_size", "ensemble", "batch_size", "train_steps", "warm_train_steps",
                    "first_fit_samples", "refit_every_samples", "recent_window", "guard_candidates",
                    "guardrail_window", "guard_window", "replay_per_bucket")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {self.quantile}")
        if not 0.0 < self.holdout_fraction < 0.9:
            raise ValueError(f"holdout_fraction must be in (0, 0.9), got {self.holdout_fraction}")
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise ValueError(f"hidden must be non-empty positive sizes, got {self.hidden!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LearnedConfig:
        """Build from a mapping of field names; unknown keys are an error (typos must not pass silently)."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown learned-router option(s): {', '.join(unknown)}")
        kwargs = {name: _coerce(known[name], value) for name, value in values.items()}
        return cls(**kwargs)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, base: Mapping[str, Any] | None = None
                 ) -> LearnedConfig:
        """``LODESTAR_TRAINER_MODE=background`` -> ``trainer_mode="background"``, on top of ``base``."""
        environ = os.environ if environ is None else environ
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = dict(base or {})
        for key, raw in environ.items():
            if key.startswith("LODESTAR_"):
                name = key[len("LODESTAR_"):].lower()
                if name in names:
                    values[name] = raw
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(f: dataclasses.Field[Any], value: Any) -> Any:
    """Strings (env vars, CLI flags) become the field's type; other values pass through."""
    default = f.default if f.default is not dataclasses.MISSING else None
    if not isinstance(value, str) or isinstance(default, str):
        if isinstance(default, tuple) and isinstance(value, list):
            return tuple(value)
        return value
    try:
        if isinstance(default, bool):
            if value.lower() in {"1", "true", "yes", "on"}:
                return True
            if value.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            if default and isinstance(default[0], int):
                return tuple(int(p) for p in parts)
            return tuple(parts)
    except ValueError:
        raise ValueError(f"option {f.name}: cannot parse {value!r}") from None
    return value
