"""Activation through the STOCK entrypoint: ``vllm-router ... --callbacks
lodestar_vllm.integrations.production_stack.callbacks.handler``.

The host imports this module (for ``--callbacks``) before it initializes the routing logic, which is the one
moment we can install our hooks without a different entrypoint. Its argument parser only accepts the built-in
names, so ``--routing-logic`` must name one of them (e.g. roundrobin); it is replaced by ``learned``, loudly.
Configuration comes from LODESTAR_* environment variables only. Importing this module outside a compatible
host raises ``HostMismatch``: a router configured for lodestar must not start without it.
"""

from __future__ import annotations

from typing import Any

from lodestar_vllm.integrations.production_stack import compat
from lodestar_vllm.integrations.production_stack.runtime import LodestarRuntime, install_runtime
from lodestar_vllm.integrations.production_stack.settings import LodestarSettings


class LodestarCallbacks:
    """A no-op CustomCallbackHandler: the hooks do the work; the callbacks slot is only the way in."""

    def pre_request(self, request: Any, request_body: bytes, request_json: Any) -> None:
        return None

    def post_request(self, request: Any, response_content: bytes) -> None:
        return None


_host = compat.check_host()
install_runtime(LodestarRuntime(LodestarSettings.from_sources(), engine_urls=compat.service_discovery_urls))
compat.activate(force_learned=True)
handler = LodestarCallbacks()
