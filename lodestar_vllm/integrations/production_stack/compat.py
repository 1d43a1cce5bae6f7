"""Activation on an UNPATCHED production-stack router, and the checks that make it fail loudly.

What we hook, and why these hooks:
- Outcomes: we wrap ``services.request_service.request.process_request`` (the async generator that performs one
  attempt against one engine). ``route_general_request`` looks it up as a module global on every attempt, so
  replacing the module attribute is enough. It sees every attempt with its request id and URL, the response
  status, every body chunk (first token, usage), connection errors before the first byte (raised from its
  first ``anext``) and client aborts (the stream is cancelled or closed early). The alternative,
  ``RequestStatsMonitor``'s hooks, is never told about failed attempts (``on_request_complete`` runs on
  success only) and sees no status, usage or aborts, so it cannot deliver "exactly once per attempt".
- Selection: ``app.py`` and ``dynamic_config.py`` import ``initialize_routing_logic`` / ``get_routing_logic`` /
  ``cleanup_routing_logic`` / ``reconfigure_routing_logic`` BY NAME, so we replace those names in the modules
  that call them (patching routing_logic alone would do nothing).
Every private detail we rely on is verified first by ``check_host``; on a mismatch we raise ``HostMismatch``
naming what differs, instead of leaving the router silently on round-robin.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from lodestar_vllm.integrations.production_stack import SUPPORTED_HOST_COMMITS
from lodestar_vllm.integrations.production_stack.routing import LearnedRouter
from lodestar_vllm.integrations.production_stack.runtime import LodestarRuntime, current_runtime

logger = logging.getLogger(__name__)

LEARNED = "learned"
_HOOK_MARK = "__lodestar_wrapped__"


class HostMismatch(RuntimeError):
    """The installed production-stack differs from what the unpatched-host activation was written against."""


@dataclass(frozen=True)
class Host:
    routing_logic: ModuleType
    request: ModuleType
    app: ModuleType
    dynamic_config: ModuleType
    parser: ModuleType


_PROCESS_REQUEST_PARAMS = ("request", "body", "backend_url", "request_id", "endpoint")


def check_host() -> Host:
    """Import the host and verify every private detail the hooks depend on."""
    problems: list[str] = []
    modules: dict[str, ModuleType] = {}
    for key, name in (
        ("routing_logic", "vllm_router.routers.routing_logic"),
        ("request", "vllm_router.services.request_service.request"),
        ("app", "vllm_router.app"),
        ("dynamic_config", "vllm_router.dynamic_config"),
        ("parser", "vllm_router.parsers.parser"),
    ):
        try:
            modules[key] = importlib.import_module(name)
        except ImportError as exc:
            problems.append(f"cannot import {name}: {exc}")
    if problems:
        raise _mismatch(problems)
    host = Host(**modules)

    rl = host.routing_logic
    for attr in ("RoutingInterface", "initialize_routing_logic", "get_routing_logic", "cleanup_routing_logic"):
        if not hasattr(rl, attr):
            problems.append(f"routing_logic has no {attr}")
    if hasattr(rl, "RoutingInterface") and not issubclass(LearnedRouter, rl.RoutingInterface):
        problems.append("LearnedRouter does not subclass the installed RoutingInterface (import order?)")

    process_request = getattr(host.request, "process_request", None)
    if process_request is None or getattr(process_request, _HOOK_MARK, None) is None:
        target = process_request
    else:
        target = getattr(process_request, _HOOK_MARK)
    if target is None or not inspect.isasyncgenfunction(target):
        problems.append("request.process_request is missing or no longer an async generator")
    else:
        params = tuple(inspect.signature(target).parameters)[: len(_PROCESS_REQUEST_PARAMS)]
        if params != _PROCESS_REQUEST_PARAMS:
            problems.append(f"request.process_request parameters are {params}, expected {_PROCESS_REQUEST_PARAMS}")
    route_general = getattr(host.request, "route_general_request", None)
    if route_general is None or "process_request" not in route_general.__code__.co_names:
        problems.append("route_general_request no longer calls process_request by its module-global name")

    for attr in ("initialize_routing_logic", "get_routing_logic", "cleanup_routing_logic", "app", "main",
                 "parse_args", "initialize_all"):
        if not hasattr(host.app, attr):
            problems.append(f"vllm_router.app has no {attr}")
    if not hasattr(host.dynamic_config, "reconfigure_routing_logic"):
        problems.append("dynamic_config no longer imports reconfigure_routing_logic by name")
    if not hasattr(host.parser, "parse_args"):
        problems.append("parsers.parser has no parse_args")
    if problems:
        raise _mismatch(problems)
    return host


def _mismatch(problems: list[str]) -> HostMismatch:
    return HostMismatch(
        "lodestar cannot activate `learned` on this production-stack router: "
        + "; ".join(problems)
        + f". Supported upstream commits: {', '.join(SUPPORTED_HOST_COMMITS)}; on other versions use the "
        "patched router (patches/) which discovers routing logics by entry point."
    )


# --- outcomes -------------------------------------------------------------------------------------------
def install_lifecycle_hook(host: Host) -> None:
    """Wrap process_request so every attempt we routed reports its outcome (idempotent)."""
    original = host.request.process_request
    if getattr(original, _HOOK_MARK, None) is not None:
        return

    async def process_request(request: Any, body: Any, backend_url: str, request_id: str, *args: Any,
                              **kwargs: Any) -> AsyncIterator[Any]:
        stream = original(request, body, backend_url, request_id, *args, **kwargs)
        runtime = current_runtime()
        attempt = runtime.tracker.claim(backend_url, request_id) if runtime is not None else None
        if attempt is None:  # not routed by us (e.g. ?id= pinned requests, other routing logics)
            async for item in stream:
                yield item
            return
        async for item in runtime.tracker.observe(attempt, stream):
            yield item

    setattr(process_request, _HOOK_MARK, original)
    process_request.__wrapped__ = original  # type: ignore[attr-defined]
    host.request.process_request = process_request


# --- selection --------------------------------------------------------------------------------------------
def install_routing_logic(host: Host, force: bool = False) -> None:
    """Make ``learned`` selectable through the host's by-name imports. With ``force`` (``--callbacks``
    activation, where argparse only accepts the built-in names) every selection becomes ``learned``."""
    rl = host.routing_logic
    if getattr(host.app.initialize_routing_logic, _HOOK_MARK, None) is not None:
        return
    original_init, original_get = rl.initialize_routing_logic, rl.get_routing_logic
    original_cleanup = rl.cleanup_routing_logic

    def initialize_routing_logic(routing_logic: Any, *args: Any, **kwargs: Any) -> Any:
        if not force and str(getattr(routing_logic, "value", routing_logic)) != LEARNED:
            return original_init(routing_logic, *args, **kwargs)
        if force and str(getattr(routing_logic, "value", routing_logic)) != LEARNED:
            logger.warning("lodestar: --routing-logic %s replaced by `learned` (--callbacks activation)",
                           routing_logic)
        original_cleanup()
        router = LearnedRouter(**kwargs)
        router.max_instance_failover_reroute_attempts = kwargs.get("max_instance_failover_reroute_attempts", 0) or 0
        logger.info("lodestar: initialized the `learned` routing logic")
        return router

    def get_routing_logic() -> Any:
        instances = rl.RoutingInterface.__class__._instances
        if LearnedRouter in instances:
            return instances[LearnedRouter]
        return original_get()

    def cleanup_routing_logic() -> None:
        instances = rl.RoutingInterface.__class__._instances
        router = instances.pop(LearnedRouter, None)
        if router is not None:
            router.close()
        original_cleanup()

    def reconfigure_routing_logic(routing_logic: Any, *args: Any, **kwargs: Any) -> Any:
        cleanup_routing_logic()
        return initialize_routing_logic(routing_logic, *args, **kwargs)

    replacements: dict[str, Callable[..., Any]] = {
        "initialize_routing_logic": initialize_routing_logic,
        "get_routing_logic": get_routing_logic,
        "cleanup_routing_logic": cleanup_routing_logic,
        "reconfigure_routing_logic": reconfigure_routing_logic,
    }
    for fn in replacements.values():
        setattr(fn, _HOOK_MARK, True)
    for module in (rl, host.app, host.dynamic_config):
        for name, fn in replacements.items():
            if hasattr(module, name):
                setattr(module, name, fn)


@contextlib.contextmanager
def routing_logic_choice(host: Host) -> Iterator[None]:
    """While the stock parser is built, add ``learned`` to ``--routing-logic``'s literal choices."""
    argparse_mod = host.parser.argparse
    original = argparse_mod.ArgumentParser.add_argument

    def add_argument(self: Any, *names: Any, **kwargs: Any) -> Any:
        if "--routing-logic" in names and kwargs.get("choices") is not None and LEARNED not in kwargs["choices"]:
            kwargs["choices"] = [*kwargs["choices"], LEARNED]
        return original(self, *names, **kwargs)

    argparse_mod.ArgumentParser.add_argument = add_argument
    try:
        yield
    finally:
        argparse_mod.ArgumentParser.add_argument = original


# --- app: status routes and background work -----------------------------------------------------------------
def install_app_hooks(host: Host, runtime_factory: Callable[[], LodestarRuntime]) -> None:
    """Mount /lodestar/* and run the runtime's background work inside the app's lifespan (idempotent)."""
    from lodestar_vllm.integrations.production_stack.runtime import install_runtime
    from lodestar_vllm.integrations.production_stack.status import mount_status

    app = host.app.app
    mount_status(app)
    original = app.router.lifespan_context
    if getattr(original, _HOOK_MARK, None) is not None:
        return

    @contextlib.asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        runtime = current_runtime() or install_runtime(runtime_factory())
        await runtime.start()
        try:
            async with original(app_) as state:
                yield state
        finally:
            await runtime.stop()

    setattr(lifespan, _HOOK_MARK, True)
    app.router.lifespan_context = lifespan


def service_discovery_urls() -> list[str]:
    """Every engine the host's discovery knows (so engines are scraped before their first request)."""
    from vllm_router.service_discovery import get_service_discovery

    return [e.url for e in get_service_discovery().get_endpoint_info()]


def activate(force_learned: bool = False, runtime_factory: Callable[[], LodestarRuntime] | None = None) -> Host:
    """Check the host, then install every hook. Raises HostMismatch (the router must not start) on mismatch."""
    from lodestar_vllm.integrations.production_stack.runtime import LodestarRuntime
    from lodestar_vllm.integrations.production_stack.settings import LodestarSettings

    host = check_host()
    if runtime_factory is None:
        def runtime_factory() -> LodestarRuntime:
            return LodestarRuntime(LodestarSettings.from_sources(), engine_urls=service_discovery_urls)
    install_lifecycle_hook(host)
    install_routing_logic(host, force=force_learned)
    install_app_hooks(host, runtime_factory)
    return host
