"""``LearnedRouter``: the host's RoutingInterface, delegating to the process-wide lodestar runtime.

Entry point ``vllm_router.routing_logics: learned`` names this class. The host calls ``route_request`` in two
ways: the stock dispatch calls classes it does not know synchronously with four arguments, while a host with
our pluggable-routing patch (and the built-in async routers' path) awaits it with the request body as a fifth.
``route_request`` therefore returns a ``RoutedUrl``: a ``str`` that is also awaitable, so both call styles work
without the host knowing which kind of router it holds.
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Generator, Mapping
from typing import Any

from lodestar_vllm.core.types import OutcomeStatus
from lodestar_vllm.integrations.production_stack.runtime import (
    LodestarRuntime,
    current_runtime,
    get_runtime,
    install_runtime,
)
from lodestar_vllm.integrations.production_stack.settings import LodestarSettings

logger = logging.getLogger(__name__)

try:  # the real host; absent (or the unrelated Rust `vllm-router` from PyPI) -> a plain base class
    from vllm_router.routers.routing_logic import RoutingInterface as _HostRoutingInterface

    HOST_AVAILABLE = True
except ImportError:
    HOST_AVAILABLE = False

    class _HostRoutingInterface:  # type: ignore[no-redef]
        """Stand-in so the adapter imports (and is testable) without production-stack installed."""

        def extract_session_id(self, request: Any, request_json: Any) -> str | None:
            return None


class RoutedUrl(str):
    """An engine URL usable directly (sync dispatch) or with ``await`` (async dispatch)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, str]:
        return str(self)
        yield  # unreachable: makes this a generator, which is what __await__ must return


class LearnedRouter(_HostRoutingInterface):
    """The `learned` routing logic. State lives in the runtime; this object is cheap and replaceable."""

    def __init__(
        self,
        *args: Any,
        max_instance_failover_reroute_attempts: int = 0,
        routing_logic_config: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if getattr(self, "_initialized", False):
            return
        # The host reads this attribute for failover; initialize_routing_logic may overwrite it.
        self.max_instance_failover_reroute_attempts = int(max_instance_failover_reroute_attempts or 0)
        self.session_key = kwargs.get("session_key")
        self._emergency = itertools.count()
        if routing_logic_config and current_runtime() is None:
            # Patched host: --routing-logic-config carries our settings (over LODESTAR_* variables).
            install_runtime(LodestarRuntime(LodestarSettings.from_sources(config=routing_logic_config)))
        get_runtime()  # create the policy now: a broken configuration stops start-up, loudly
        self._status_mounted = False
        host_app = getattr(sys.modules.get("vllm_router.app"), "app", None)
        if host_app is not None:
            self._mount_status(host_app)
        self._initialized = True

    def _mount_status(self, app: Any) -> None:
        # On the patched host nothing else of ours touches the app: mount /lodestar/* on it ourselves.
        try:
            from lodestar_vllm.integrations.production_stack.status import mount_status

            mount_status(app)
            self._status_mounted = True
        except Exception:
            logger.exception("lodestar: could not mount /lodestar/status")
            self._status_mounted = True  # do not retry on every request

    def route_request(
        self,
        endpoints: list[Any],
        engine_stats: dict[str, Any],
        request_stats: dict[str, Any],
        request: Any,
        request_json: dict[str, Any] | None = None,
    ) -> RoutedUrl:
        try:
            runtime = get_runtime()
            runtime.ensure_started()
            if not self._status_mounted and hasattr(request, "app"):
                self._mount_status(request.app)
            return RoutedUrl(runtime.route(endpoints, engine_stats, request, request_json))
        except Exception:
            if not endpoints:
                raise
            # Even the runtime failed (bad settings, broken policy import): keep serving, loudly.
            logger.exception("lodestar: learned routing failed, falling back to round-robin")
            return RoutedUrl(endpoints[next(self._emergency) % len(endpoints)].url)

    async def aroute_request(
        self,
        endpoints: list[Any],
        engine_stats: dict[str, Any],
        request_stats: dict[str, Any],
        request: Any,
        request_json: dict[str, Any] | None = None,
    ) -> str:
        return str(self.route_request(endpoints, engine_stats, request_stats, request, request_json))

    # --- the patched host's request lifecycle listener API (patches/0002) -------------------------------
    def on_request_start(self, record: Any) -> None:
        runtime = current_runtime()
        attempt = runtime.tracker.claim(record.engine_url, record.request_id) if runtime else None
        if attempt is not None:  # None: not ours, or already claimed by the unpatched-host hook
            # Kept in the runtime, not on this object: a reconfiguration may replace the router mid-request.
            by_record = runtime.listener_attempts
            if len(by_record) >= runtime.tracker.max_attempts:
                by_record.pop(next(iter(by_record)))
            by_record[(record.request_id, record.engine_url)] = attempt

    def on_first_token(self, record: Any) -> None:
        runtime = current_runtime()
        attempt = runtime.listener_attempts.get((record.request_id, record.engine_url)) if runtime else None
        if runtime is not None and attempt is not None:
            runtime.tracker.first_token(attempt)

    def on_request_end(self, record: Any) -> None:
        runtime = current_runtime()
        if runtime is None:
            return
        attempt = runtime.listener_attempts.pop((record.request_id, record.engine_url), None)
        if attempt is None:
            return
        attempt.http_status = record.http_status
        status = {"success": OutcomeStatus.OK, "aborted": OutcomeStatus.ABORTED}.get(
            record.status, OutcomeStatus.FAILED
        )
        usage = {k: v for k in ("prompt_tokens", "completion_tokens", "cached_tokens")
                 if (v := getattr(record, k, None)) is not None}
        runtime.tracker.finish(attempt, status, record.error, usage=usage)

    def close(self) -> None:
        """Called by the host when it drops this singleton (reconfiguration, shutdown). Learned state stays
        in the runtime; a checkpoint is written so a shutdown loses nothing."""
        runtime = current_runtime()
        if runtime is not None:
            try:
                runtime.save_checkpoint_blocking()
            except Exception:
                logger.exception("lodestar: checkpoint on close failed")
