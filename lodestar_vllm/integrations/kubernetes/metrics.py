"""Prometheus view of Kubernetes awareness (``lodestar_k8s_`` prefix): read from the counters at scrape time,
so nothing is added to the request path or to the background loops."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Sharing counters exported as lodestar_k8s_sharing_events_total{event=...}.
SHARING_EVENTS = (
    "loads", "own_versions", "refusals", "import_errors", "candidates", "unchanged_candidates", "export_errors",
    "publishes", "publish_conflicts", "follow_errors", "tick_errors", "too_large",
)


class KubernetesAwarenessCollector(Collector):
    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        pods = GaugeMetricFamily("lodestar_k8s_known_engine_pods", "Engine pods the hardware watcher knows")
        pods.add_metric([], status.get("known_engine_pods", 0))
        yield pods
        errors = CounterMetricFamily("lodestar_k8s_watch_errors", "Hardware watch errors (each backed off)",
                                     labels=["kind"])
        restarts = CounterMetricFamily("lodestar_k8s_watch_restarts", "Hardware watches re-listed (routine)",
                                       labels=["kind"])
        for kind in ("pod", "node"):
            stats = status.get(f"{kind}_watch", {})
            errors.add_metric([kind], stats.get("errors", 0))
            restarts.add_metric([kind], stats.get("watch_restarts", 0))
        yield errors
        yield restarts
        sharing = status.get("sharing")
        if sharing is None:
            return
        leader = GaugeMetricFamily("lodestar_k8s_sharing_leader", "1 while this replica holds the publisher Lease")
        leader.add_metric([], 1.0 if sharing.get("leader") else 0.0)
        yield leader
        version = GaugeMetricFamily("lodestar_k8s_shared_model_version", "Shared model version this replica runs")
        version.add_metric([], sharing.get("loaded_version", 0))
        yield version
        events = CounterMetricFamily("lodestar_k8s_sharing_events", "Model-sharing events by kind",
                                     labels=["event"])
        for event in SHARING_EVENTS:
            events.add_metric([event], sharing.get(event, 0))
        yield events
