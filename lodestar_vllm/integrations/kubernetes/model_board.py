"""The sharing board on Kubernetes: checkpoints in ConfigMaps, large ones on a shared volume.

- ``<group>-model``: the shared model (label ``lodestar-vllm/role=shared-model``), written by the leader only.
- ``<group>-candidate-<replica>``: one per replica (label ``lodestar-vllm/role=candidate``), owned by the
  replica's pod when its UID is known, so Kubernetes deletes it with the pod.

A checkpoint goes into ``binaryData``, zlib-compressed unless it is compressed already. ConfigMaps are capped
at 1 MiB (data + binaryData), so a stored checkpoint above ``max_inline_bytes`` goes to a file on a
ReadWriteMany volume mounted by every replica, named by its digest (content-addressed: writers never clash), and the ConfigMap carries only the
pointer. Readers verify the SHA-256 of every payload; a record that fails is dropped and counted.

Publishing replaces the shared ConfigMap with the ``resourceVersion`` just read (optimistic concurrency: a
second leader loses with 409) and only with a version above the stored one, so versions are monotonic.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from lodestar_vllm.integrations.kubernetes.sharing import ModelRecord, digest_of

log = logging.getLogger(__name__)

CONFIGMAP_LIMIT_BYTES = 1024 * 1024  # the API server's cap on data + binaryData
# Headroom under the cap for the data keys, labels and the JSON envelope.
DEFAULT_MAX_INLINE_BYTES = 900 * 1024
PAYLOAD_KEY = "checkpoint.bin"
_ENCODINGS = ("zlib", "identity")
# Checkpoints that are compressed already (the learned policy's are) gain nothing from zlib and cost ~70 ms per
# MB on a busy core: a 64 KiB trial decides.
_TRIAL_BYTES = 64 * 1024
_WORTHWHILE_RATIO = 0.9
ROLE_LABEL = "lodestar-vllm/role"
GROUP_LABEL = "lodestar-vllm/group"


class CheckpointTooLarge(ValueError):
    """The compressed checkpoint exceeds the ConfigMap budget and no shared volume is configured."""


class CorruptRecord(ValueError):
    """A ConfigMap whose payload is missing, unreadable or fails its digest."""


@dataclass
class BoardStats:
    writes: int = 0
    volume_writes: int = 0
    conflicts: int = 0  # lost a publish race (409) or found a newer version stored
    corrupt: int = 0
    files_removed: int = 0


class ConfigMapModelBoard:
    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        *,
        group: str = "lodestar",
        volume_dir: str | Path | None = None,
        max_inline_bytes: int = DEFAULT_MAX_INLINE_BYTES,
        owner_pod: Mapping[str, str] | None = None,
        request_timeout_s: float = 10.0,
        volume_retention_s: float = 600.0,
    ) -> None:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", group) or len(group) > 40:
            raise ValueError(f"group must be a short DNS label, got {group!r}")
        if not 0 < max_inline_bytes <= DEFAULT_MAX_INLINE_BYTES:
            raise ValueError(f"max_inline_bytes must be in (0, {DEFAULT_MAX_INLINE_BYTES}]")
        self._core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.group = group
        self.volume_dir = Path(volume_dir) if volume_dir is not None else None
        self.max_inline_bytes = max_inline_bytes
        # {"name": ..., "uid": ...} of this replica's pod (downward API): its candidate dies with it.
        self._owner_pod = dict(owner_pod) if owner_pod and owner_pod.get("uid") else None
        self._timeout = request_timeout_s
        self._retention_s = volume_retention_s
        self.stats = BoardStats()

    @property
    def shared_name(self) -> str:
        return f"{self.group}-model"

    def candidate_name(self, replica: str) -> str:
        slug = re.sub(r"[^a-z0-9-]+", "-", replica.lower()).strip("-")[:200] or "replica"
        return f"{self.group}-candidate-{slug}"

    def selector(self, role: str) -> str:
        return f"{ROLE_LABEL}={role},{GROUP_LABEL}={self.group}"

    # ---- shared model -------------------------------------------------------------------------------------

    async def read_shared(self) -> ModelRecord | None:
        stored = await self._read(self.shared_name)
        return await self.decode(stored) if stored is not None else None

    async def stored_version(self) -> int | None:
        """The shared version number as stored, even when its payload is unreadable."""
        stored = await self._read(self.shared_name)
        return _int((stored.get("data") or {}).get("version")) if stored is not None else None

    async def publish(self, record: ModelRecord) -> bool:
        """Store ``record`` as the shared model if its version is above the stored one; False when another
        leader got there first."""
        stored = await self._read(self.shared_name)
        if stored is not None:
            stored_version = _int((stored.get("data") or {}).get("version"))
            if stored_version is not None and stored_version >= record.version:
                self.stats.conflicts += 1
                return False
        body = await self._encode(self.shared_name, "shared-model", record, stored)
        written = await self._write(self.shared_name, body, stored)
        if written:
            self._collect_garbage(keep={record.digest})
        return written

    async def watch_shared(self, watch_timeout_s: float = 300.0) -> AsyncIterator[ModelRecord]:
        """Shared-model records as they change (the current one first). Ends when the watch ends; the
        caller re-enters (with backoff on errors). Corrupt records are counted and skipped."""
        current = await self.read_shared()
        if current is not None:
            yield current
        async with watch.Watch(return_type="object") as stream:
            with contextlib.suppress(TimeoutError):  # the client-side bound below: an ordinary end
                async for event in stream.stream(
                    self._core.list_namespaced_config_map,
                    self.namespace,
                    label_selector=self.selector("shared-model"),
                    timeout_seconds=int(watch_timeout_s),
                    _request_timeout=watch_timeout_s + self._timeout,
                ):
                    if event.get("type") not in ("ADDED", "MODIFIED"):
                        continue
                    obj = event.get("raw_object") or {}
                    if (obj.get("metadata") or {}).get("name") != self.shared_name:
                        continue
                    try:
                        yield await self.decode(obj)
                    except CorruptRecord as error:
                        log.warning("skipping shared model: %s", error)

    # ---- candidates ---------------------------------------------------------------------------------------

    async def post_candidate(self, record: ModelRecord) -> bool:
        name = self.candidate_name(record.replica)
        stored = await self._read(name)
        body = await self._encode(name, "candidate", record, stored)
        return await self._write(name, body, stored)

    async def candidates(self) -> list[ModelRecord]:
        response = await self._core.list_namespaced_config_map(
            self.namespace, label_selector=self.selector("candidate"), _preload_content=False,
            _request_timeout=self._timeout,
        )
        listing = await _json_or_raise(response)
        records = []
        for item in listing.get("items") or []:
            try:
                records.append(await self.decode(item))
            except CorruptRecord as error:
                log.warning("skipping candidate: %s", error)
        return records

    # ---- encoding -----------------------------------------------------------------------------------------

    async def _encode(
        self, name: str, role: str, record: ModelRecord, stored: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        encoding, compressed = await asyncio.to_thread(_compress, record.payload)
        data = {
            "version": str(record.version),
            "replica": record.replica,
            "digest": record.digest,
            "createdAt": repr(record.created_at),
            "validationLoss": "" if record.validation_loss is None else repr(record.validation_loss),
            "baseVersion": str(record.base_version),
            "encoding": encoding,
            "size": str(len(record.payload)),
        }
        binary: dict[str, str] | None
        if len(compressed) <= self.max_inline_bytes:
            data["location"] = "inline"
            binary = {PAYLOAD_KEY: base64.b64encode(compressed).decode("ascii")}
        else:
            if self.volume_dir is None:
                raise CheckpointTooLarge(
                    f"compressed checkpoint is {len(compressed)} bytes (> {self.max_inline_bytes}) and no "
                    "shared volume is configured"
                )
            data["location"] = "volume"
            data["path"] = await asyncio.to_thread(self._write_file, record.digest, compressed)
            self.stats.volume_writes += 1
            binary = None
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "labels": {ROLE_LABEL: role, GROUP_LABEL: self.group, "app.kubernetes.io/part-of": "lodestar-vllm"},
        }
        resource_version = ((stored or {}).get("metadata") or {}).get("resourceVersion")
        if resource_version:
            metadata["resourceVersion"] = resource_version
        if role == "candidate" and self._owner_pod is not None:
            metadata["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Pod", "name": self._owner_pod["name"], "uid": self._owner_pod["uid"]}
            ]
        # binaryData None drops a previous inline payload when switching to the volume.
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data, "binaryData": binary}

    async def decode(self, obj: Mapping[str, Any]) -> ModelRecord:
        data = obj.get("data") or {}
        name = (obj.get("metadata") or {}).get("name", "?")
        version = _int(data.get("version"))
        if version is None or not data.get("digest") or data.get("encoding") not in _ENCODINGS:
            self.stats.corrupt += 1
            raise CorruptRecord(f"{name}: missing version, digest or encoding")
        try:
            if data.get("location") == "volume":
                compressed = await asyncio.to_thread(self._read_file, str(data.get("path", "")))
            else:
                compressed = base64.b64decode((obj.get("binaryData") or {})[PAYLOAD_KEY], validate=True)
            payload = (
                await asyncio.to_thread(zlib.decompress, compressed) if data["encoding"] == "zlib" else compressed
            )
        except (KeyError, ValueError, OSError, zlib.error) as error:
            self.stats.corrupt += 1
            raise CorruptRecord(f"{name}: unreadable payload ({error!r})") from error
        if digest_of(payload) != data["digest"]:
            self.stats.corrupt += 1
            raise CorruptRecord(f"{name}: digest mismatch")
        loss_text = data.get("validationLoss") or ""
        return ModelRecord(
            version=version,
            replica=str(data.get("replica", "")),
            digest=data["digest"],
            created_at=_float(data.get("createdAt")) or 0.0,
            payload=payload,
            validation_loss=_float(loss_text) if loss_text else None,
            base_version=_int(data.get("baseVersion")) or 0,
        )

    # ---- shared volume ------------------------------------------------------------------------------------

    def _file_name(self, digest: str) -> str:
        return f"{self.group}-{digest[:40]}.ckpt"

    def _write_file(self, digest: str, compressed: bytes) -> str:
        assert self.volume_dir is not None
        self.volume_dir.mkdir(parents=True, exist_ok=True)
        name = self._file_name(digest)
        target = self.volume_dir / name
        if not target.exists():
            # Write then rename: a reader never sees half a file, and equal digests mean equal bytes.
            tmp = self.volume_dir / f".{name}.{os.getpid()}.tmp"
            tmp.write_bytes(compressed)
            os.replace(tmp, target)
        else:
            os.utime(target)  # keep a re-published file away from the garbage collector
        return name

    def _read_file(self, name: str) -> bytes:
        if self.volume_dir is None:
            raise OSError("record points to the shared volume but none is configured here")
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"invalid volume path {name!r}")
        return (self.volume_dir / name).read_bytes()

    def _collect_garbage(self, keep: set[str]) -> None:
        """Remove checkpoint files nobody can still need: not the current one, older than the retention (a
        follower may be reading a slightly older pointer)."""
        if self.volume_dir is None or not self.volume_dir.is_dir():
            return
        keep_names = {self._file_name(digest) for digest in keep}
        cutoff = time.time() - self._retention_s
        for path in self.volume_dir.glob(f"{self.group}-*.ckpt"):
            with contextlib.suppress(OSError):
                if path.name not in keep_names and path.stat().st_mtime < cutoff:
                    path.unlink()
                    self.stats.files_removed += 1

    # ---- API calls ----------------------------------------------------------------------------------------

    async def _read(self, name: str) -> dict[str, Any] | None:
        try:
            response = await self._core.read_namespaced_config_map(
                name, self.namespace, _preload_content=False, _request_timeout=self._timeout
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        if response.status == 404:
            response.release()
            return None
        return await _json_or_raise(response)

    async def _write(self, name: str, body: dict[str, Any], stored: Mapping[str, Any] | None) -> bool:
        try:
            if stored is None:
                body = {**body, "binaryData": body["binaryData"] or {}}
                await self._core.create_namespaced_config_map(
                    self.namespace, body, _request_timeout=self._timeout
                )
            else:
                await self._core.replace_namespaced_config_map(
                    name, self.namespace, body, _request_timeout=self._timeout
                )
        except ApiException as error:
            if error.status == 409:  # someone else wrote first (create race or stale resourceVersion)
                self.stats.conflicts += 1
                return False
            raise
        self.stats.writes += 1
        return True


def _compress(payload: bytes) -> tuple[str, bytes]:
    trial = payload[:_TRIAL_BYTES]
    if trial and len(zlib.compress(trial, 1)) > _WORTHWHILE_RATIO * len(trial):
        return "identity", payload
    return "zlib", zlib.compress(payload, 6)


async def _json_or_raise(response: Any) -> dict[str, Any]:
    """Raw (unparsed-model) responses skip the client's status check: do it here."""
    try:
        if not 200 <= response.status <= 299:
            raise ApiException(status=response.status, reason=(await response.text())[:200])
        return await response.json()
    finally:
        response.release()


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(str(value))
    except (TypeError, ValueError):
        return None
