"""Prometheus collectors of the learned router (``lodestar_`` prefix, default registry).

The host (production-stack's router) serves the default registry on its own ``/metrics``. Collectors are
created once per process on first use (``lodestar_metrics()``); a second import or a module reload finds the
already-registered collectors instead of failing with "Duplicated timeseries".
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_LOCK = threading.Lock()
_INSTANCE: LodestarMetrics | None = None

RATIO_BUCKETS = (0.125, 0.25, 0.5, 0.67, 0.8, 0.9, 1.0, 1.11, 1.25, 1.5, 2.0, 4.0, 8.0)
LATENCY_BUCKETS = (25e-6, 50e-6, 100e-6, 200e-6, 300e-6, 500e-6, 1e-3, 2e-3, 5e-3, 1e-2, 5e-2)
STALENESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
TRAIN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)


@dataclass(frozen=True)
class LodestarMetrics:
    decisions: Counter
    fallbacks: Counter
    prediction_ratio: Histogram
    engine_predicted_ttft: Gauge
    engine_observed_ttft: Gauge
    model_version: Gauge
    model_age: Gauge
    training_runs: Counter
    training_duration: Histogram
    training_samples: Gauge
    fits_rejected: Counter
    trainer_restarts: Counter
    replay_size: Gauge
    feature_staleness: Histogram
    prefix_index_blocks: Gauge
    ledger_records: Gauge
    decision_latency: Histogram
    guardrail_active: Gauge
    guardrail_trips: Counter
    checkpoint_refused: Counter


def get_or_create(registry: CollectorRegistry, cls: type, name: str, doc: str, **kwargs: Any) -> Any:
    """The collector registered under ``name``, created on first use (safe to call from several places)."""
    # prometheus_client keys counters without their "_total" suffix.
    key = name.removesuffix("_total") if cls is Counter else name
    existing = getattr(registry, "_names_to_collectors", {}).get(key) or \
        getattr(registry, "_names_to_collectors", {}).get(name)
    if existing is not None:
        return existing
    return cls(name, doc, registry=registry, **kwargs)


def lodestar_metrics(registry: CollectorRegistry | None = None) -> LodestarMetrics:
    """The process-wide collectors (created on first call). Pass a registry only in tests."""
    global _INSTANCE
    if registry is None and _INSTANCE is not None:
        return _INSTANCE
    with _LOCK:
        if registry is None and _INSTANCE is not None:
            return _INSTANCE
        reg = REGISTRY if registry is None else registry
        g = get_or_create
        made = LodestarMetrics(
            decisions=g(reg, Counter, "lodestar_decisions_total", "Routing decisions by path", labelnames=("path",)),
            fallbacks=g(reg, Counter, "lodestar_fallbacks_total", "Fallback decisions by reason",
                        labelnames=("reason",)),
            prediction_ratio=g(reg, Histogram, "lodestar_prediction_ratio",
                               "Predicted / observed TTFT of model-routed requests", buckets=RATIO_BUCKETS),
            engine_predicted_ttft=g(reg, Gauge, "lodestar_engine_predicted_ttft_seconds",
                                    "EWMA of predicted TTFT of requests routed to the engine", labelnames=("engine",)),
            engine_observed_ttft=g(reg, Gauge, "lodestar_engine_observed_ttft_seconds",
                                   "EWMA of observed TTFT of requests routed to the engine", labelnames=("engine",)),
            model_version=g(reg, Gauge, "lodestar_model_version", "Version of the model in use (0: none)"),
            model_age=g(reg, Gauge, "lodestar_model_age_seconds", "Age of the model in use, caller's clock"),
            training_runs=g(reg, Counter, "lodestar_training_runs_total", "Training runs by result",
                            labelnames=("result",)),
            training_duration=g(reg, Histogram, "lodestar_training_duration_seconds", "Duration of one fit",
                                buckets=TRAIN_BUCKETS),
            training_samples=g(reg, Gauge, "lodestar_training_samples", "Samples in the last training set"),
            fits_rejected=g(reg, Counter, "lodestar_fits_rejected_total", "Fits not swapped in, by reason",
                            labelnames=("reason",)),
            trainer_restarts=g(reg, Counter, "lodestar_trainer_restarts_total", "Background trainer restarts"),
            replay_size=g(reg, Gauge, "lodestar_replay_size", "Samples held in the replay reservoirs"),
            feature_staleness=g(reg, Histogram, "lodestar_feature_staleness_seconds",
                                "Age of the scraped engine metrics used in a decision", buckets=STALENESS_BUCKETS),
            prefix_index_blocks=g(reg, Gauge, "lodestar_prefix_index_blocks", "Blocks in the router's prefix index"),
            ledger_records=g(reg, Gauge, "lodestar_ledger_records", "In-flight decision records"),
            decision_latency=g(reg, Histogram, "lodestar_decision_latency_seconds",
                               "In-process time of one routing decision", buckets=LATENCY_BUCKETS),
            guardrail_active=g(reg, Gauge, "lodestar_guardrail_active",
                               "1 while the guardrail holds the learned path on the fallback"),
            guardrail_trips=g(reg, Counter, "lodestar_guardrail_trips_total", "Guardrail activations"),
            checkpoint_refused=g(reg, Counter, "lodestar_checkpoint_refused_total", "Checkpoints refused"),
        )
        if registry is None:
            _INSTANCE = made
        return made
