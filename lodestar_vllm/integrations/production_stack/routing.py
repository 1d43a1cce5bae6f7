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
from collections.abc import Generator
from typing import Any

from lodestar_vllm.integrations.production_stack.runtime import get_runtime

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

    def __init__(self, *args: Any, max_instance_failover_reroute_attempts: int = 0, **kwargs: Any) -> None:
        if getattr(self, "_initialized", False):
            return
        # The host reads this attribute for failover; initialize_routing_logic may overwrite it.
        self.max_instance_failover_reroute_attempts = int(max_instance_failover_reroute_attempts or 0)
        self.session_key = kwargs.get("session_key")
        self._emergency = itertools.count()
        self._initialized = True

    def route_request(
        self,
        endpoints: list[Any],
        engine_stats: dict[str, Any],
        request_stats: dict[str, Any],
        request: Any,
        request_json: dict[str, Any] | None = None,
    ) -> RoutedUrl:
        try:
            return RoutedUrl(get_runtime().route(endpoints, engine_stats, request, request_json))
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

    def close(self) -> None:
        """Called by the host when it drops this singleton; learned state stays in the runtime."""
