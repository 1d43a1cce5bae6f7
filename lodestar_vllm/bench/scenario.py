"""One benchmark scenario: which cluster, which workload at which load, how the router sees the fleet."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from lodestar_vllm.bench.presets import ClusterChoice, load_cluster
from lodestar_vllm.sim.cluster import ScenarioEvent, SimConfig


class ScenarioError(ValueError):
    """Bad scenario input (unknown preset, missing trace file): the message says what to do."""


@dataclass(frozen=True, slots=True)
class Scenario:
    cluster: str
    workload: str
    seed: int = 0
    rate_scale: float = 1.0
    duration: float | None = None
    max_requests: int | None = None
    # None: the workload's own default (Mooncake timestamps come in ~3 s buckets and carry their own jitter).
    jitter: float | None = None
    scrape_interval_s: float = 1.0
    scrape_staleness_s: float = 0.0
    hide_hardware: bool = False
    net_delay_s: float = 0.0
    replicas: int = 1
    replica_split: str = "session"
    share_interval_s: float | None = None

    def with_(self, **changes: Any) -> Scenario:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sim_config(self) -> SimConfig:
        return SimConfig(
            scrape_interval_s=self.scrape_interval_s,
            scrape_staleness_s=self.scrape_staleness_s,
            hide_hardware=self.hide_hardware,
            net_delay_s=self.net_delay_s,
            replicas=self.replicas,
            replica_split=self.replica_split,
            share_interval_s=self.share_interval_s,
        )

    def load_cluster(self) -> ClusterChoice:
        try:
            return load_cluster(self.cluster)
        except (ValueError, OSError) as exc:
            raise ScenarioError(str(exc)) from exc

    def load_requests(self) -> list[Any]:
        from lodestar_vllm.workloads import load_workload

        kwargs: dict[str, Any] = {"seed": self.seed, "rate_scale": self.rate_scale, "duration": self.duration,
                                  "max_requests": self.max_requests}
        if self.jitter is not None:
            kwargs["jitter"] = self.jitter
        try:
            requests = load_workload(self.workload, **kwargs)
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise ScenarioError(f"workload {self.workload!r}: {exc}") from exc
        if not requests:
            raise ScenarioError(f"workload {self.workload!r} produced no requests (duration/max-requests too small?)")
        return list(requests)

    def events(self, choice: ClusterChoice, requests: list[Any]) -> list[ScenarioEvent]:
        span = max(r.arrival_time for r in requests) if requests else 0.0
        return choice.events(span)
