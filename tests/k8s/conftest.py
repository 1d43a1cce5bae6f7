"""A real HTTP Kubernetes API stand-in for the kubernetes-asyncio code: kmock's in-memory emulator, with the
fixes described in ../shared/docs/kubernetes-testing.md (watch flag spelling, labelSelector), plus what the code
under test relies on from a real API server: PUT as an update (the leader-election library replaces its Lease),
resourceVersion with 409 on a stale write, the 1 MiB ConfigMap cap (422) and 3 MiB bodies; and deliberate
fault injection and restarts.

Tests talk to it over HTTP with the real client; nothing here mocks the client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

kmock = pytest.importorskip("kmock", reason="kmock (test extra) is needed for the Kubernetes API stand-in")
kubernetes_asyncio = pytest.importorskip("kubernetes_asyncio", reason="kubernetes-asyncio (k8s extra) absent")

import aiohttp.web  # noqa: E402  (after the skips: only meaningful when kmock is installed)
from kmock._internal import parsing as kmock_parsing  # noqa: E402  (its URL parser: the same reading of paths)
from kubernetes_asyncio import client  # noqa: E402

_SELECTOR_TERM = re.compile(r"^\s*(!?)([A-Za-z0-9./_-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9._-]*))?\s*$")


def _split_selector(selector: str) -> list[str]:
    # Commas inside "in (a,b)" sets would break a plain split; this project only uses equality and existence.
    return [term for term in selector.split(",") if term.strip()]


def selector_matches(selector: str | None, labels: dict[str, str] | None) -> bool:
    """Equality-based label selectors (k=v, k==v, k!=v, k, !k): what the code under test sends."""
    if not selector:
        return True
    labels = labels or {}
    for term in _split_selector(selector):
        match = _SELECTOR_TERM.match(term)
        if match is None:
            raise ValueError(f"unsupported label selector term {term!r}")
        negated, key, op, value = match.groups()
        if op is None:
            present = key in labels
            if present == bool(negated):
                return False
        elif op in ("=", "=="):
            if labels.get(key) != value:
                return False
        elif labels.get(key) == value:  # "!="
            return False
    return True


@dataclass
class _Fault:
    remaining: int
    status: int
    predicate: Callable[[aiohttp.web.BaseRequest], bool]


class FaultyKubernetesEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with the project's fixes and a switch to fail chosen requests with an API error."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # A real API server always knows its built-in kinds, even before the first object exists.
        for resource in ("v1/pods", "v1/nodes", "v1/configmaps", "coordination.k8s.io/v1/leases"):
            self.resources[resource] = {}
        self.faults: list[_Fault] = []
        self.failed_requests = 0
        # (method, path, is_watch) of every request as the client sent it: the RBAC test maps them to verbs.
        self.calls: list[tuple[str, str, bool]] = []
        self._write_lock = asyncio.Lock()
        self._resource_versions = itertools.count(1)

    def inject_errors(
        self, count: int, status: int = 500, predicate: Callable[[aiohttp.web.BaseRequest], bool] | None = None
    ) -> None:
        """Answer the next ``count`` matching requests with a Kubernetes Status error (nothing is stored)."""
        self.faults.append(_Fault(count, status, predicate or (lambda _request: True)))

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        watching = raw_request.query.get("watch", "").lower() == "true"
        self.calls.append((raw_request.method, raw_request.path, watching))
        for fault in self.faults:
            if fault.remaining > 0 and fault.predicate(raw_request):
                fault.remaining -= 1
                self.failed_requests += 1
                await raw_request.read()
                return _status(fault.status, "InjectedFault", "fault injected by the test")
        request = _normalised(raw_request)  # before any read: aiohttp cannot clone a request it has read
        too_large = await _configmap_too_large(request)
        if too_large is not None:
            return too_large
        if raw_request.method not in ("POST", "PUT", "PATCH"):
            return await super().__call__(request)
        # Writes are serialised so that the resourceVersion check and the write are one step, as in etcd.
        async with self._write_lock:
            key, body = await self._object_key(raw_request.method, request)
            if key is not None and self._stale(key, body):
                return _status(409, "Conflict", "the object has been modified; please apply your changes to "
                                                "the latest version and try again")
            response = await super().__call__(request)
            if key is not None and 200 <= response.status < 300:
                self._bump_resource_version(key)
            return response

    async def _object_key(self, method: str, request: aiohttp.web.BaseRequest) -> tuple[Any, dict[str, Any]]:
        parsed = kmock_parsing.parse_path(request.path)
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            return None, {}
        name = parsed.name if method != "POST" else (body.get("metadata") or {}).get("name")
        if parsed.group is None or not parsed.plural or not name or not isinstance(body, dict):
            return None, {}
        namespace = parsed.namespace or (body.get("metadata") or {}).get("namespace")
        resource = kmock.resource(group=parsed.group, version=parsed.version, plural=parsed.plural)
        return (resource, namespace, name), body

    def _stale(self, key: Any, body: dict[str, Any]) -> bool:
        """kmock keeps no resourceVersion; a real API server refuses a write carrying an outdated one."""
        sent = (body.get("metadata") or {}).get("resourceVersion")
        if not sent or key not in self.objects or self.objects[key].deleted:
            return False
        current = (self.objects[key].get("metadata") or {}).get("resourceVersion")
        return current is not None and str(current) != str(sent)

    def _bump_resource_version(self, key: Any) -> None:
        if key in self.objects and not self.objects[key].deleted:
            self.objects[key].patch({"metadata": {"resourceVersion": str(next(self._resource_versions))}})

    async def _serve_list(self, request: Any) -> Any:
        result = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        result["items"] = [item for item in result["items"] if _labels_match(selector, item)]
        return result

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        selector = request.params.get("labelSelector")
        async for event in super()._serve_watch(request):
            if isinstance(event, dict) and not _labels_match(selector, event.get("object", {})):
                continue
            yield event


CONFIGMAP_LIMIT_BYTES = 1024 * 1024
API_REQUEST_LIMIT_BYTES = 3 * 1024 * 1024


async def _configmap_too_large(raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.Response | None:
    """The real API server rejects a ConfigMap whose data + binaryData exceed 1 MiB (422); kmock does not."""
    if raw_request.method not in ("POST", "PUT", "PATCH") or "/configmaps" not in raw_request.path:
        return None
    try:
        body = json.loads(await raw_request.read() or b"{}")
    except ValueError:
        return None
    size = sum(len(str(value).encode()) for value in (body.get("data") or {}).values())
    size += sum(len(base64.b64decode(value)) for value in (body.get("binaryData") or {}).values() if value)
    if size <= CONFIGMAP_LIMIT_BYTES:
        return None
    return aiohttp.web.json_response(
        {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 422, "reason": "Invalid",
         "message": f"ConfigMap is invalid: []: Too long: must have at most {CONFIGMAP_LIMIT_BYTES} bytes"},
        status=422,
    )


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    return aiohttp.web.json_response(
        {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason,
         "message": message},
        status=code,
    )


def _labels_match(selector: str | None, obj: dict[str, Any]) -> bool:
    return selector_matches(selector, (obj.get("metadata") or {}).get("labels"))


def _normalised(raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.BaseRequest:
    """kubernetes-asyncio sends watch=True and replaces objects with PUT; kmock knows watch=true and PATCH.
    aiohttp's default body cap (1 MiB) is raised to the API server's (3 MiB): an inline checkpoint near the
    ConfigMap cap is about 1.3 MB once base64-encoded in JSON."""
    changes: dict[str, Any] = {"client_max_size": API_REQUEST_LIMIT_BYTES}
    if raw_request.query.get("watch") == "True":
        changes["rel_url"] = raw_request.rel_url.update_query(watch="true")
    if raw_request.method == "PUT":
        # A full replacement merged over the stored object equals a replace for the objects used here
        # (Lease specs are always sent whole).
        changes["method"] = "PATCH"
    return raw_request.clone(**changes)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ApiServer:
    """The emulator served on a fixed loopback port, so that it can be stopped and started again (a restart
    drops every open watch; the objects survive, as they would in etcd)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.emulator = FaultyKubernetesEmulator()
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = kmock.Server(self.emulator, host="127.0.0.1", port=self.port)
        await self._server.__aenter__()

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.__aexit__(None, None, None)

    async def restart(self, downtime_s: float = 0.3) -> None:
        await self.stop()
        await asyncio.sleep(downtime_s)
        await self.start()

    def api_client(self) -> client.ApiClient:
        configuration = client.Configuration(host=self.url)
        return client.ApiClient(configuration)


@pytest.fixture
async def apiserver() -> AsyncIterator[ApiServer]:
    server = ApiServer()
    async with server.emulator:
        await server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(Exception):
                await server.stop()


@pytest.fixture
async def api(apiserver: ApiServer) -> AsyncIterator[client.ApiClient]:
    """A kubernetes-asyncio client for the test's own writes (creating pods, nodes, reading ConfigMaps)."""
    async with apiserver.api_client() as api_client:
        yield api_client


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll a condition; every wait in these tests is bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)
