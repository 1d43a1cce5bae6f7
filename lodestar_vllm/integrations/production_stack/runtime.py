"""The process-wide learned state, kept outside the host's router singleton.

The host deletes its routing-logic singleton on dynamic reconfiguration; the policy (and what it learned), the
scraper and the attempt tracker live here instead, so a new ``LearnedRouter`` picks them up unchanged.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import logging
import os
import time
from collections import ChainMap, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lodestar_vllm.core.config import LearnedConfig
from lodestar_vllm.core.types import Decision, DecisionPath, HardwareInfo, InstanceView, RequestInfo
from lodestar_vllm.integrations.production_stack import checkpoint
from lodestar_vllm.integrations.production_stack.lifecycle import Attempt, LifecycleTracker
from lodestar_vllm.integrations.production_stack.request_info import max_tokens, parse_body, prompt_text
from lodestar_vllm.integrations.production_stack.scraper import MetricsScraper
from lodestar_vllm.integrations.production_stack.settings import LodestarSettings
from lodestar_vllm.integrations.production_stack.views import build_views
from lodestar_vllm.logging_setup import configure_logging
from lodestar_vllm.policies.base import RoutingPolicy
from lodestar_vllm.policies.outlier_ejection import OutlierEjection
from lodestar_vllm.policies.registry import create_policy

logger = logging.getLogger(__name__)


class LodestarRuntime:
    def __init__(
        self,
        settings: LodestarSettings,
        policy: RoutingPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        engine_urls: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        configure_logging()  # LODESTAR_LOG_FORMAT=json: structured events (swaps, fallbacks, refusals)
        self.settings = settings
        self.clock = clock
        self.policy = policy or make_policy(settings)
        self.restored = False
        if settings.checkpoint_path:
            self.restored = checkpoint.restore(self.policy, settings.checkpoint_path)
        self._seen_urls: OrderedDict[str, float] = OrderedDict()
        self._engine_urls = engine_urls
        self.scraper = MetricsScraper(
            self.known_urls, interval=settings.scrape_interval, timeout=settings.scrape_timeout, clock=clock
        )
        self.tracker = LifecycleTracker(
            self.policy, clock, pending_timeout=settings.pending_timeout, on_finished=self._record_outcome
        )
        self._explain: OrderedDict[str, dict[str, Any]] = OrderedDict()  # attempt id -> record
        self._by_host_id: OrderedDict[str, list[str]] = OrderedDict()  # host request id -> attempt ids
        self.fallbacks = 0
        self.routed = 0
        self.checkpoints_written = 0
        self._rr = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []
        self.k8s: Any = None  # KubernetesAwareness, when enabled
        # Patched host: attempts claimed through the lifecycle listener API, by (request id, engine url).
        self.listener_attempts: OrderedDict[tuple[str, str], Attempt] = OrderedDict()
        self._k8s_started = False
        self.k8s_error: str | None = None  # why the awareness is absent although LODESTAR_K8S_* asked for it
        self.hardware: Mapping[str, HardwareInfo] = self.settings.hardware

    # --- the request path (no I/O, no training: a policy call and some dict updates) --------------------
    def route(
        self,
        endpoints: Sequence[Any],
        engine_stats: Mapping[str, Any] | None,
        request: Any,
        request_json: Mapping[str, Any] | None,
    ) -> str:
        if not endpoints:
            raise ValueError("lodestar: route_request called with no endpoints (the host checks this first)")
        now = self.clock()
        urls = [e.url for e in endpoints]
        for url in urls:
            self._remember(url, now)
        headers = _headers(request)
        body = dict(request_json) if isinstance(request_json, Mapping) else parse_body(_cached_body(request))
        attempt_id = self.tracker.new_attempt_id(headers.get("x-request-id"))
        info = RequestInfo(
            request_id=attempt_id,
            model=str(body.get("model", "")),
            prompt_text=prompt_text(body),
            arrival_time=now,
            max_tokens=max_tokens(body),
            session_id=headers.get("x-session-id") or (str(body["user"]) if body.get("user") else None),
            headers=headers,
        )
        views = build_views(endpoints, engine_stats, self.scraper.latest(), self.hardware, now,
                            unreachable=self.scraper.errors)
        decision = self._decide(info, views, now)
        self.routed += 1
        self.tracker.register(Attempt(attempt_id, decision.url, info, decision, routed_at=now))
        self._record_decision(attempt_id, decision, views)
        return decision.url

    def _decide(self, info: RequestInfo, views: list[InstanceView], now: float) -> Decision:
        urls = {v.url for v in views}
        try:
            decision = self.policy.route(info, views, now)
            if decision.url in urls:
                return decision
            reason = f"policy returned {decision.url!r}, not a candidate"
        except Exception as exc:  # the contract says never, but a router must not drop requests over it
            logger.exception("lodestar policy.route failed for %s", info.request_id)
            reason = f"policy raised {type(exc).__name__}: {exc}"
        self.fallbacks += 1
        candidates = [v for v in views if v.healthy] or views
        chosen = candidates[next(self._rr) % len(candidates)].url
        return Decision(url=chosen, path=DecisionPath.FALLBACK, reason=f"round-robin fallback: {reason}")

    def _remember(self, url: str, now: float) -> None:
        self._seen_urls[url] = now
        self._seen_urls.move_to_end(url)
        while len(self._seen_urls) > 4096:
            self._seen_urls.popitem(last=False)

    def known_urls(self) -> list[str]:
        urls = set(self._seen_urls)
        if self._engine_urls is not None:
            try:
                urls.update(self._engine_urls())
            except Exception:
                logger.exception("lodestar: listing engines from the host failed")
        return sorted(urls)

    # --- explanations ----------------------------------------------------------------------------------
    def _record_decision(self, attempt_id: str, decision: Decision, views: list[InstanceView]) -> None:
        self._explain[attempt_id] = {
            "attempt_id": attempt_id,
            "url": decision.url,
            "path": decision.path.value,
            "predicted_ttft": decision.predicted_ttft,
            "reason": decision.reason,
            "candidates": [v.url for v in views],
        }
        while len(self._explain) > self.settings.explain_capacity:
            self._explain.popitem(last=False)

    def _record_outcome(self, attempt: Attempt) -> None:
        record = self._explain.get(attempt.attempt_id)
        if record is not None and attempt.outcome is not None:
            o = attempt.outcome
            record["outcome"] = {"status": o.status.value, "ttft": o.ttft, "e2e": o.e2e, "error": o.error,
                                 "http_status": o.http_status, "prompt_tokens": o.prompt_tokens,
                                 "completion_tokens": o.completion_tokens}
            record["host_request_id"] = attempt.host_request_id
        if attempt.host_request_id:
            ids = self._by_host_id.setdefault(attempt.host_request_id, [])
            if attempt.attempt_id not in ids:
                ids.append(attempt.attempt_id)
            while len(self._by_host_id) > self.settings.explain_capacity:
                self._by_host_id.popitem(last=False)

    def explain(self, request_id: str) -> dict[str, Any] | None:
        """Every attempt of ``request_id`` (the X-Request-Id the router returned, or our attempt id)."""
        attempt_ids = self._by_host_id.get(request_id) or ([request_id] if request_id in self._explain else [])
        if not attempt_ids:
            return None
        attempts = []
        for attempt_id in attempt_ids:
            record = dict(self._explain.get(attempt_id, {"attempt_id": attempt_id}))
            policy_explain = getattr(self.policy, "explain", None)
            if policy_explain is not None:
                try:
                    record["policy"] = policy_explain(attempt_id)
                except Exception as exc:
                    record["policy"] = {"error": f"{type(exc).__name__}: {exc}"}
            attempts.append(record)
        return {"request_id": request_id, "attempts": attempts}

    def status(self) -> dict[str, Any]:
        policy_status: Any = None
        if hasattr(self.policy, "status"):
            try:
                policy_status = self.policy.status()  # type: ignore[attr-defined]
            except Exception as exc:
                policy_status = {"error": f"{type(exc).__name__}: {exc}"}
        return {
            "policy": self.settings.policy,
            "policy_status": policy_status,
            "routed": self.routed,
            "fallbacks": self.fallbacks,
            "attempts": self.tracker.counts(),
            "scraper": {
                "rounds": self.scraper.rounds,
                "engines": sorted(self.scraper.latest()),
                "errors": dict(self.scraper.errors),
            },
            "kubernetes": self._kubernetes_status(),
            "checkpoint": {
                "path": self.settings.checkpoint_path,
                "restored": self.restored,
                "written": self.checkpoints_written,
            },
        }

    def _kubernetes_status(self) -> dict[str, Any] | None:
        if self.k8s is not None:
            return self.k8s.status()
        return {"error": self.k8s_error} if self.k8s_error else None

    # --- background work ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the scraper, the pending sweeper and periodic checkpoints on the running loop, and the
        Kubernetes awareness (hardware discovery, model sharing) when LODESTAR_K8S_* asks for it."""
        self.ensure_started()
        await self._start_kubernetes()

    async def _start_kubernetes(self) -> None:
        """Start the awareness once. Whatever goes wrong (missing extra, bad LODESTAR_K8S_* value, no
        service account or kubeconfig, a slow API server) is logged and kept for /lodestar/status, and the
        router serves with the static hardware map: discovery is an enrichment, never a reason not to route.
        The watchers themselves start in the background, so only client set-up is awaited, and that is bounded
        by ``kubernetes_start_timeout``."""
        if self._k8s_started or not kubernetes_requested():
            return
        self._k8s_started = True  # set before awaiting: the lifespan and ensure_started may both get here
        try:
            from lodestar_vllm.integrations.kubernetes.awareness import KubernetesAwareness, policy_callables

            async with asyncio.timeout(self.settings.kubernetes_start_timeout):
                learner = policy_callables(self.policy) if hasattr(self.policy, "import_checkpoint") else None
                awareness = await KubernetesAwareness.start_from_env(learner)
        except Exception as exc:  # TimeoutError included
            detail = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            self.k8s_error = (f"Kubernetes awareness did not start ({detail}); engine hardware is unknown "
                              "unless --lodestar-hardware names it")
            logger.error("lodestar: %s", self.k8s_error, extra={"event": "kubernetes_unavailable"})
            return
        self.k8s = awareness
        # Static entries first: an operator's --lodestar-hardware overrides what discovery reads.
        self.hardware = ChainMap(dict(self.settings.hardware), awareness.hardware_by_url())

    async def stop(self) -> None:
        await self.scraper.stop()
        # Background tasks first: a Kubernetes start still in flight must finish or be cancelled before we
        # look for an awareness to close, or one set up after that look would never be closed.
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks.clear()
        if self.k8s is not None:
            k8s, self.k8s = self.k8s, None
            self.hardware = self.settings.hardware
            await k8s.close()
        await self.save_checkpoint()

    def ensure_started(self) -> None:
        """Start background work on the running loop if nobody did (the patched host has no lifespan hook
        of ours); a no-op outside a loop and once started."""
        if self._tasks:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self.scraper.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._sweep_forever(), name="lodestar-sweeper"))
        if self.settings.checkpoint_path and checkpoint.supports_checkpoints(self.policy):
            self._tasks.append(loop.create_task(self._checkpoint_forever(), name="lodestar-checkpoint"))
        if kubernetes_requested():  # patched host: no lifespan of ours, so start it from here
            self._tasks.append(loop.create_task(self._start_kubernetes_logged(), name="lodestar-kubernetes"))

    async def _start_kubernetes_logged(self) -> None:
        try:
            await self._start_kubernetes()
        except Exception:  # _start_kubernetes handles its own failures; this is the last net for a task
            logger.exception("lodestar: Kubernetes awareness failed to start; routing goes on without it")

    def save_checkpoint_blocking(self) -> None:
        if self.settings.checkpoint_path and checkpoint.supports_checkpoints(self.policy):
            if checkpoint.save_blocking(self.policy, self.settings.checkpoint_path):
                self.checkpoints_written += 1

    async def save_checkpoint(self) -> None:
        if self.settings.checkpoint_path and checkpoint.supports_checkpoints(self.policy):
            if await checkpoint.save(self.policy, self.settings.checkpoint_path):
                self.checkpoints_written += 1

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.settings.pending_timeout))
            self.tracker.sweep()

    async def _checkpoint_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.checkpoint_interval)
            try:
                await self.save_checkpoint()
            except Exception:
                logger.exception("lodestar: periodic checkpoint failed")


def kubernetes_requested(env: Mapping[str, str] | None = None) -> bool:
    """Kubernetes awareness is on when the Helm values set any LODESTAR_K8S_* variable."""
    env = os.environ if env is None else env
    return any(key.startswith("LODESTAR_K8S_") and value for key, value in env.items())


LEARNED_POLICIES = ("learned", "learned-shadow")


def make_policy(settings: LodestarSettings) -> RoutingPolicy:
    """A registry name (``learned``, ``least-request``...) or ``package.module:Factory`` for custom policies,
    behind outlier ejection: an engine failing attempt after attempt is avoided for a while, whatever the
    policy (a fast-failing engine otherwise looks idle and fast)."""
    return OutlierEjection(_make_inner_policy(settings))


def _make_inner_policy(settings: LodestarSettings) -> RoutingPolicy:
    options = dict(settings.policy_options)
    if settings.policy in LEARNED_POLICIES:
        # In a router, training must never run on the event loop: background trainer unless told otherwise.
        # LODESTAR_<FIELD> variables (LearnedConfig.from_env) apply on top; --lodestar-policy-options win.
        config = LearnedConfig.from_env(base={"trainer_mode": "background"}).to_dict()
        config.update(options)
        return create_policy(settings.policy, seed=settings.seed, config=config)
    if ":" not in settings.policy:
        return create_policy(settings.policy, seed=settings.seed, **options)
    module_name, _, attr = settings.policy.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    policy = factory(seed=settings.seed, **options)
    if not isinstance(policy, RoutingPolicy):
        raise TypeError(f"{settings.policy} built {type(policy).__name__}, not a RoutingPolicy")
    return policy


def _headers(request: Any) -> dict[str, str]:
    try:
        return {k.lower(): v for k, v in request.headers.items()}
    except Exception:
        return {}


def _cached_body(request: Any) -> bytes | None:
    # Starlette caches the body once awaited (the host awaits it before routing); the sync call path cannot
    # await, so it reads the cache and never touches the socket.
    body = getattr(request, "_body", None)
    return body if isinstance(body, bytes | bytearray) else None


_RUNTIME: LodestarRuntime | None = None


def get_runtime() -> LodestarRuntime:
    """The process's runtime, created from LODESTAR_* environment variables on first use."""
    global _RUNTIME
    if _RUNTIME is None:
        _RUNTIME = LodestarRuntime(LodestarSettings.from_sources())
    return _RUNTIME


def install_runtime(runtime: LodestarRuntime) -> LodestarRuntime:
    global _RUNTIME
    _RUNTIME = runtime
    return runtime


def current_runtime() -> LodestarRuntime | None:
    return _RUNTIME


def clear_runtime() -> None:
    """Forget the runtime (tests; process shutdown after ``stop``)."""
    global _RUNTIME
    if _RUNTIME is not None:
        _RUNTIME.policy.close()
    _RUNTIME = None
