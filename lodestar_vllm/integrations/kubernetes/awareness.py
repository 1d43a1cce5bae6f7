"""Kubernetes awareness for a router process: hardware discovery and (optionally) model sharing, configured
from environment variables set by the Helm values (helm-values/kubernetes-values.yaml), started and stopped as
one object by the host adapter.

The learner is reached only through callables (``policy_callables`` reads them off any object with
``export_checkpoint`` / ``import_checkpoint``), so this module imports no policy.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client, config
from prometheus_client import REGISTRY, CollectorRegistry

from lodestar_vllm.core.types import HardwareInfo
from lodestar_vllm.integrations.kubernetes.hardware import HardwareWatcher
from lodestar_vllm.integrations.kubernetes.lease import LeaseElector
from lodestar_vllm.integrations.kubernetes.metrics import KubernetesAwarenessCollector
from lodestar_vllm.integrations.kubernetes.model_board import ConfigMapModelBoard
from lodestar_vllm.integrations.kubernetes.replica import SharedModelReplica
from lodestar_vllm.integrations.kubernetes.sharing import (
    Evaluate,
    Export,
    Import,
    SharingConfig,
    SharingCore,
    ValidationLoss,
)

log = logging.getLogger(__name__)

ENV_PREFIX = "LODESTAR_K8S_"


@dataclass(frozen=True, slots=True)
class KubernetesOptions:
    engine_namespace: str | None = None  # None: engines in every namespace (needs a ClusterRole for pods)
    engine_selector: str | None = None
    node_selector: str | None = None
    sharing: bool = False
    router_namespace: str = "default"  # where the Lease and the ConfigMaps live
    replica_id: str = "router"
    pod_uid: str | None = None
    group: str = "lodestar"
    shared_volume: str | None = None
    candidate_interval_s: float = 30.0
    publish_interval_s: float = 30.0
    lease_duration_s: int = 15
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KubernetesOptions:
        """Read ``LODESTAR_K8S_*`` plus the downward-API ``POD_NAME`` / ``POD_NAMESPACE`` / ``POD_UID``; a bad
        value raises ValueError naming the variable."""
        env = os.environ if env is None else env

        def text(name: str) -> str | None:
            value = env.get(ENV_PREFIX + name, "").strip()
            return value or None

        def number(name: str, default: float) -> float:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{name} must be a number, got {raw!r}") from None
            if value <= 0:
                raise ValueError(f"{ENV_PREFIX}{name} must be positive, got {raw!r}")
            return value

        sharing_raw = (text("SHARING") or "false").lower()
        if sharing_raw not in ("1", "true", "yes", "0", "false", "no"):
            raise ValueError(f"{ENV_PREFIX}SHARING must be true or false, got {sharing_raw!r}")
        lease = number("LEASE_DURATION", 15)
        if lease != int(lease):
            raise ValueError(f"{ENV_PREFIX}LEASE_DURATION must be whole seconds, got {lease}")
        return cls(
            engine_namespace=text("ENGINE_NAMESPACE"),
            engine_selector=text("ENGINE_SELECTOR"),
            node_selector=text("NODE_SELECTOR"),
            sharing=sharing_raw in ("1", "true", "yes"),
            router_namespace=env.get("POD_NAMESPACE") or text("ROUTER_NAMESPACE") or "default",
            replica_id=env.get("POD_NAME") or socket.gethostname(),
            pod_uid=env.get("POD_UID") or None,
            group=text("SHARING_GROUP") or "lodestar",
            shared_volume=text("SHARED_VOLUME"),
            candidate_interval_s=number("CANDIDATE_INTERVAL", 30.0),
            publish_interval_s=number("PUBLISH_INTERVAL", 30.0),
            lease_duration_s=int(lease),
            renew_deadline_s=number("RENEW_DEADLINE", 10.0),
            retry_period_s=number("RETRY_PERIOD", 2.0),
        )


class HardwareByUrl(Mapping[str, HardwareInfo]):
    """The watcher as the read-only url -> HardwareInfo mapping that the production-stack adapter's
    ``build_views`` takes (chain it after the operator's static map). Lookups are non-blocking."""

    def __init__(self, watcher: HardwareWatcher) -> None:
        self._watcher = watcher

    def __getitem__(self, url: str) -> HardwareInfo:
        info = self._watcher.descriptor_for(url)
        if info is None:
            raise KeyError(url)
        return info

    def __iter__(self) -> Iterator[str]:
        # Keys are pod IPs (the port is the host's business); a full URL and a bare IP look up alike.
        return iter(self._watcher.known_hosts())

    def __len__(self) -> int:
        return len(self._watcher.known_hosts())


@dataclass(frozen=True, slots=True)
class LearnerCallables:
    export: Export
    import_: Import
    validation_loss: ValidationLoss | None = None
    evaluate: Evaluate | None = None


def policy_callables(policy: Any) -> LearnerCallables:
    """The sharing callables of a learned policy (duck-typed: ``export_checkpoint``, ``import_checkpoint``,
    ``model.holdout_loss``). A policy without a trained model exports nothing yet (no candidate, no error)."""

    def export() -> bytes:
        if getattr(policy, "model", None) is None:
            return b""
        return bytes(policy.export_checkpoint())

    def validation_loss() -> float | None:
        model = getattr(policy, "model", None)
        loss = getattr(model, "holdout_loss", None) if model is not None else None
        return float(loss) if loss is not None else None

    return LearnerCallables(export=export, import_=policy.import_checkpoint, validation_loss=validation_loss)


async def default_api_client() -> client.ApiClient:
    """In-cluster service account when running in a pod, else the local kubeconfig."""
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        configuration = client.Configuration()
        # KUBECONFIG is read now, not when kubernetes-asyncio was imported (its default is fixed at import).
        await config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
        return client.ApiClient(configuration)


class KubernetesAwareness:
    def __init__(
        self,
        options: KubernetesOptions,
        api_client: client.ApiClient,
        learner: LearnerCallables | None = None,
        *,
        owns_client: bool = False,
        watcher_kwargs: Mapping[str, Any] | None = None,
        replica_kwargs: Mapping[str, Any] | None = None,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        if options.sharing and learner is None:
            raise ValueError("model sharing is enabled but no learner callables were given")
        self.options = options
        self._api_client = api_client
        self._registry = registry
        self._collector = KubernetesAwarenessCollector(self.status)
        self._registered = False
        self._owns_client = owns_client
        self.hardware = HardwareWatcher(
            api_client,
            namespace=options.engine_namespace,
            pod_label_selector=options.engine_selector,
            node_label_selector=options.node_selector,
            **dict(watcher_kwargs or {}),
        )
        self.sharing: SharedModelReplica | None = None
        if options.sharing and learner is not None:
            core = SharingCore(
                options.replica_id,
                learner.export,
                learner.import_,
                validation_loss=learner.validation_loss,
                evaluate=learner.evaluate,
                config=SharingConfig(
                    candidate_interval_s=options.candidate_interval_s,
                    publish_interval_s=options.publish_interval_s,
                    candidate_ttl_s=6 * max(options.candidate_interval_s, options.publish_interval_s),
                ),
            )
            board = ConfigMapModelBoard(
                api_client,
                options.router_namespace,
                group=options.group,
                volume_dir=options.shared_volume,
                owner_pod={"name": options.replica_id, "uid": options.pod_uid or ""},
            )
            elector = LeaseElector(
                api_client,
                options.router_namespace,
                f"{options.group}-model-publisher",
                options.replica_id,
                lease_duration_s=options.lease_duration_s,
                renew_deadline_s=options.renew_deadline_s,
                retry_period_s=options.retry_period_s,
            )
            self.sharing = SharedModelReplica(core, board, elector, **dict(replica_kwargs or {}))

    @classmethod
    async def start_from_env(
        cls,
        learner: LearnerCallables | None = None,
        env: Mapping[str, str] | None = None,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> KubernetesAwareness:
        options = KubernetesOptions.from_env(env)
        awareness = cls(options, await default_api_client(), learner, owns_client=True, registry=registry)
        await awareness.start()
        return awareness

    async def start(self) -> None:
        await self.hardware.start()
        if self.sharing is not None:
            await self.sharing.start()
        if self._registry is not None and not self._registered:
            try:
                self._registry.register(self._collector)  # served by the host's /metrics (default registry)
                self._registered = True
            except ValueError as error:  # another instance in this process already exports these names
                log.warning("kubernetes awareness metrics not registered: %s", error)
        log.info("kubernetes awareness started (sharing=%s, replica=%s)", self.sharing is not None,
                 self.options.replica_id)

    def hardware_by_url(self) -> HardwareByUrl:
        return HardwareByUrl(self.hardware)

    def status(self) -> dict[str, Any]:
        """Counters for the router's status endpoint."""
        status: dict[str, Any] = {
            "known_engine_pods": self.hardware.known_pods,
            "pod_watch": vars(self.hardware.pod_stats).copy(),
            "node_watch": vars(self.hardware.node_stats).copy(),
        }
        if self.sharing is not None:
            status["sharing"] = {
                "leader": self.sharing.elector.is_leader,
                "loaded_version": self.sharing.core.loaded_version,
                **vars(self.sharing.core.stats),
                **vars(self.sharing.stats),
                "board": vars(self.sharing.board.stats).copy(),
            }
        return status

    async def close(self, release: bool = True) -> None:
        if self._registry is not None and self._registered:
            self._registry.unregister(self._collector)
            self._registered = False
        if self.sharing is not None:
            await self.sharing.close(release=release)
        await self.hardware.close()
        if self._owns_client:
            await self._api_client.close()
