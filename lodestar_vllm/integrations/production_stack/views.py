"""Host objects -> the learner's candidate views.

Preference per engine: our own scrape (current vLLM metric names, with cache config), else the host's
EngineStats (old names only: KV usage and prefix counters read 0 against today's engines, so they are only a
fallback), else no metrics at all (the policy then relies on its own in-flight accounting).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from lodestar_vllm.core.types import EngineMetrics, HardwareInfo, InstanceView


def metrics_from_host_stats(stats: Any, scraped_at: float) -> EngineMetrics:
    """vllm_router.stats.engine_stats.EngineStats -> EngineMetrics (fields it lacks stay at their defaults)."""
    return EngineMetrics(
        scraped_at=scraped_at,
        num_running=float(getattr(stats, "num_running_requests", 0) or 0),
        num_waiting=float(getattr(stats, "num_queuing_requests", 0) or 0),
        kv_cache_usage=min(1.0, max(0.0, float(getattr(stats, "gpu_cache_usage_perc", 0.0) or 0.0))),
        prefix_cache_queries_total=float(getattr(stats, "gpu_prefix_cache_queries_total", 0) or 0),
        prefix_cache_hits_total=float(getattr(stats, "gpu_prefix_cache_hits_total", 0) or 0),
    )


def build_views(
    endpoints: Sequence[Any],
    host_engine_stats: Mapping[str, Any] | None,
    scraped: Mapping[str, EngineMetrics],
    hardware: Mapping[str, HardwareInfo],
    now: float,
    unreachable: Collection[str] = (),
) -> list[InstanceView]:
    """One view per endpoint, in the host's order. ``endpoints`` are EndpointInfo-like (``.url``, ``.healthy``).
    An engine is unhealthy when the host says so or when our last scrape of it failed (``unreachable``): static
    discovery keeps listing a dead engine, and the policies prefer healthy candidates."""
    views: list[InstanceView] = []
    host_engine_stats = host_engine_stats or {}
    for endpoint in endpoints:
        url = endpoint.url
        key = url.rstrip("/")
        metrics = scraped.get(key)
        if metrics is None and url in host_engine_stats:
            # The host keeps no scrape time; treat its figures as current (it rescrapes every few seconds).
            metrics = metrics_from_host_stats(host_engine_stats[url], now)
        healthy = getattr(endpoint, "healthy", True)
        views.append(
            InstanceView(
                url=url,
                metrics=metrics,
                hardware=hardware.get(key) or _hardware_from_labels(endpoint),
                healthy=(True if healthy is None else bool(healthy)) and key not in unreachable,
            )
        )
    return views


def _hardware_from_labels(endpoint: Any) -> HardwareInfo | None:
    # The chart's model_label is free text set by operators; we only take it as a GPU class when it says so
    # explicitly ("gpu=H100-80GB"), never guess from arbitrary labels.
    label = getattr(endpoint, "model_label", None)
    if isinstance(label, str) and label.startswith("gpu="):
        return HardwareInfo(gpu_class=label[4:] or None)
    return None
