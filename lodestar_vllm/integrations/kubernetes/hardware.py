"""Hardware discovery: watch engine pods and GPU nodes with kubernetes-asyncio and keep, per engine, the
HardwareInfo the learner may use as features.

The request path only calls ``descriptor_for`` (two dict lookups). Everything else runs in two background
tasks (pods, nodes), each a list-then-watch loop: a watch that ends (server timeout, 410 Gone, dropped
connection, API-server restart) is followed by a fresh list, API errors by a capped, jittered backoff. While
the API is unreachable the last known facts stay in place (GPU models do not change under a running pod); an
engine that was never seen reads as unknown hardware (None).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from lodestar_vllm.core.types import HardwareInfo
from lodestar_vllm.integrations.kubernetes.backoff import Backoff
from lodestar_vllm.integrations.kubernetes.descriptors import (
    NodeGpuFacts,
    PodFacts,
    hardware_info,
    node_gpu_facts,
    pod_facts,
)

log = logging.getLogger(__name__)

PodKey = tuple[str, str]  # (namespace, name)
_HOST_CACHE_LIMIT = 4096


@dataclass
class WatcherStats:
    """Counters for tests and the router's metrics: how often each loop relisted, failed, or saw events."""

    lists: int = 0
    events: int = 0
    watch_restarts: int = 0  # routine: server-side timeout, 410 Gone, dropped connection
    errors: int = 0  # API errors and unexpected exceptions (each followed by a backoff)


class HardwareWatcher:
    """Maps engine endpoints (pod IP in the URL, or pod name + namespace) to their GPU facts."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        namespace: str | None = None,
        pod_label_selector: str | None = None,
        node_label_selector: str | None = None,
        watch_timeout_s: float = 300.0,
        request_timeout_s: float = 10.0,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        if watch_timeout_s < 1 or request_timeout_s <= 0:
            raise ValueError("watch_timeout_s must be >= 1 and request_timeout_s > 0")
        self._core = client.CoreV1Api(api_client)
        self._namespace = namespace
        self._pod_selector = pod_label_selector
        self._node_selector = node_label_selector
        self._watch_timeout_s = watch_timeout_s
        self._request_timeout_s = request_timeout_s
        self._new_backoff = backoff
        self._pods: dict[PodKey, PodFacts] = {}
        self._nodes: dict[str, NodeGpuFacts] = {}
        # What the request path reads; rebuilt entry by entry when a pod or node changes.
        self._by_pod: dict[PodKey, HardwareInfo | None] = {}
        self._by_ip: dict[str, PodKey] = {}
        self._hosts: dict[str, str] = {}  # url -> host
        self._tasks: list[asyncio.Task[None]] = []
        self._pods_synced = asyncio.Event()
        self._nodes_synced = asyncio.Event()
        self.pod_stats = WatcherStats()
        self.node_stats = WatcherStats()

    # ---- request path -------------------------------------------------------------------------------------

    def descriptor_for(
        self, url: str, pod_name: str | None = None, namespace: str | None = None
    ) -> HardwareInfo | None:
        """Non-blocking lookup: by pod name (production-stack's EndpointInfo has it) or by the IP in the URL."""
        if pod_name:
            key = (namespace or self._namespace or "default", pod_name)
            if key in self._by_pod:
                return self._by_pod[key]
        host = self._hosts.get(url)
        if host is None:
            # URL parsing costs about a microsecond; engine URLs repeat, so parse each once (bounded cache).
            if len(self._hosts) >= _HOST_CACHE_LIMIT:
                self._hosts.clear()
            host = self._hosts[url] = _host_of(url) or ""
        key_by_ip = self._by_ip.get(host) if host else None
        return self._by_pod.get(key_by_ip) if key_by_ip else None

    # ---- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._follow("pods", self._pods_call(), self._apply_pods, self.pod_stats)),
            asyncio.create_task(self._follow("nodes", self._nodes_call(), self._apply_nodes, self.node_stats)),
        ]

    async def wait_synced(self, timeout_s: float) -> bool:
        """True once pods and nodes were listed at least once (bounded wait; False on timeout)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._pods_synced.wait()
                await self._nodes_synced.wait()
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def known_pods(self) -> int:
        return len(self._pods)

    def known_hosts(self) -> list[str]:
        """Pod IPs with a descriptor (unknown hardware excluded)."""
        return [ip for ip, key in self._by_ip.items() if self._by_pod.get(key) is not None]

    # ---- list-then-watch loop -----------------------------------------------------------------------------

    async def _follow(
        self,
        kind: str,
        call: tuple[Callable[..., Awaitable[Any]], tuple[Any, ...], dict[str, Any]],
        apply: Callable[[str, Mapping[str, Any]], None],
        stats: WatcherStats,
    ) -> None:
        function, args, kwargs = call
        backoff = self._new_backoff()
        loop = asyncio.get_running_loop()
        gone_in_a_row = 0
        while True:
            try:
                listing = await _as_json(
                    function(*args, **kwargs, _preload_content=False, _request_timeout=self._request_timeout_s)
                )
                apply("SYNC", {"items": _items(listing)})
                stats.lists += 1
                resource_version = (listing.get("metadata") or {}).get("resourceVersion")
                started = loop.time()
                await self._watch(function, args, kwargs, apply, stats, resource_version)
                stats.watch_restarts += 1
                gone_in_a_row = 0
                if loop.time() - started < 1.0:
                    # A watch that ends at once, again and again, must not become a busy list loop.
                    await asyncio.sleep(backoff.next_delay())
                else:
                    backoff.reset()
            except asyncio.CancelledError:
                raise
            except ApiException as error:
                if error.status == 410:
                    # Our list is too old to watch from (etcd compaction): list again, at once the first time.
                    stats.watch_restarts += 1
                    gone_in_a_row += 1
                    await asyncio.sleep(0 if gone_in_a_row == 1 else backoff.next_delay())
                    continue
                await self._back_off(kind, stats, backoff, f"API error {error.status}")
            except Exception as error:  # a watcher must outlive anything the API or the network does
                await self._back_off(kind, stats, backoff, repr(error))

    async def _back_off(self, kind: str, stats: WatcherStats, backoff: Backoff, what: str) -> None:
        stats.errors += 1
        delay = backoff.next_delay()
        log.warning("kubernetes %s watch: %s; retrying in %.1f s", kind, what, delay)
        await asyncio.sleep(delay)

    async def _watch(
        self,
        function: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        selector: dict[str, Any],
        apply: Callable[[str, Mapping[str, Any]], None],
        stats: WatcherStats,
        resource_version: str | None,
    ) -> None:
        kwargs: dict[str, Any] = selector | {
            "timeout_seconds": int(self._watch_timeout_s),
            # Client-side bound as well: a server that ignores timeoutSeconds must not hold us forever.
            "_request_timeout": self._watch_timeout_s + self._request_timeout_s,
        }
        if resource_version:
            kwargs["resource_version"] = resource_version
        async with watch.Watch(return_type="object") as stream:
            try:
                async for event in stream.stream(function, *args, **kwargs):
                    stats.events += 1
                    apply(str(event.get("type", "")), event.get("raw_object") or {})
            except TimeoutError:
                return  # the client-side bound expired: an ordinary end of this watch

    def _pods_call(self) -> tuple[Callable[..., Awaitable[Any]], tuple[Any, ...], dict[str, Any]]:
        selector = {"label_selector": self._pod_selector} if self._pod_selector else {}
        if self._namespace:
            return self._core.list_namespaced_pod, (self._namespace,), selector
        return self._core.list_pod_for_all_namespaces, (), selector

    def _nodes_call(self) -> tuple[Callable[..., Awaitable[Any]], tuple[Any, ...], dict[str, Any]]:
        return self._core.list_node, (), ({"label_selector": self._node_selector} if self._node_selector else {})

    # ---- state --------------------------------------------------------------------------------------------

    def _apply_pods(self, event_type: str, obj: Mapping[str, Any]) -> None:
        if event_type == "SYNC":
            fresh = [facts for facts in (pod_facts(item) for item in obj["items"]) if facts is not None]
            seen = {(facts.namespace, facts.name) for facts in fresh}
            for key in [key for key in self._pods if key not in seen]:
                self._forget_pod(key)
            for facts in fresh:
                self._remember_pod(facts)
            self._pods_synced.set()
            return
        facts = pod_facts(obj)
        if facts is None:
            return
        key = (facts.namespace, facts.name)
        if event_type == "DELETED":
            self._forget_pod(key)
        elif event_type in ("ADDED", "MODIFIED"):
            self._remember_pod(facts)

    def _apply_nodes(self, event_type: str, obj: Mapping[str, Any]) -> None:
        if event_type == "SYNC":
            fresh = {
                item["metadata"]["name"]: node_gpu_facts(item["metadata"].get("labels"))
                for item in obj["items"]
                if (item.get("metadata") or {}).get("name")
            }
            changed = {name for name in set(fresh) | set(self._nodes) if fresh.get(name) != self._nodes.get(name)}
            self._nodes = fresh
            self._refresh_nodes(changed)
            self._nodes_synced.set()
            return
        metadata = obj.get("metadata") or {}
        name = metadata.get("name")
        if not name:
            return
        if event_type == "DELETED":
            self._nodes.pop(name, None)
        elif event_type in ("ADDED", "MODIFIED"):
            self._nodes[name] = node_gpu_facts(metadata.get("labels"))
        else:
            return
        self._refresh_nodes({name})

    def _remember_pod(self, facts: PodFacts) -> None:
        key = (facts.namespace, facts.name)
        old = self._pods.get(key)
        if old is not None and old.pod_ip and old.pod_ip != facts.pod_ip and self._by_ip.get(old.pod_ip) == key:
            del self._by_ip[old.pod_ip]
        self._pods[key] = facts
        self._by_pod[key] = self._describe(facts)
        if facts.pod_ip and not facts.terminated:
            self._by_ip[facts.pod_ip] = key
        elif facts.pod_ip and self._by_ip.get(facts.pod_ip) == key:
            del self._by_ip[facts.pod_ip]

    def _forget_pod(self, key: PodKey) -> None:
        facts = self._pods.pop(key, None)
        self._by_pod.pop(key, None)
        if facts is not None and facts.pod_ip and self._by_ip.get(facts.pod_ip) == key:
            del self._by_ip[facts.pod_ip]

    def _refresh_nodes(self, node_names: set[str]) -> None:
        if not node_names:
            return
        for key, facts in self._pods.items():
            if facts.node_name in node_names:
                self._by_pod[key] = self._describe(facts)

    def _describe(self, facts: PodFacts) -> HardwareInfo | None:
        node = self._nodes.get(facts.node_name) if facts.node_name else None
        return hardware_info(facts, node)


async def _as_json(call: Awaitable[Any]) -> Any:
    """Lists are read as plain JSON (no model classes): cheaper, and the same shape as watch events."""
    response = await call
    try:
        if not 200 <= response.status <= 299:
            body = await response.text()
            raise ApiException(status=response.status, reason=f"{response.reason}: {body[:200]}")
        return await response.json()
    finally:
        response.release()


def _items(listing: Any) -> list[Mapping[str, Any]]:
    if not isinstance(listing, Mapping) or not isinstance(listing.get("items"), list):
        raise ValueError(f"unexpected list response: {str(listing)[:200]}")
    return listing["items"]


def _host_of(url: str) -> str | None:
    try:
        return urlsplit(url if "//" in url else f"//{url}").hostname
    except ValueError:
        return None
