"""Virtual-time, discrete-event simulator of a vLLM cluster behind one or more router replicas.

Each engine is an ``EngineCore`` driven step by step: ``step(now)`` returns its duration and the step's outputs
become visible at ``now + duration``; an idle engine is not stepped. The router under test sees only what
production shows: ``RequestInfo`` built from the prompt text, ``InstanceView`` with metrics as of the last
scrape (scrape interval plus optional extra staleness) and hardware facts from the cluster file (optionally
hidden), and its own dispatch / first-token / outcome callbacks. Engine internals are reachable only through
``estimate_ttft`` (the TTFT probe used by the ``oracle-greedy`` reference policy).

Deterministic for a seed: one heap ordered by (time, sequence number), no wall clock, no iteration over sets.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lodestar_vllm.core.types import (
    HardwareInfo,
    InstanceView,
    Outcome,
    OutcomeStatus,
    RequestInfo,
)
from lodestar_vllm.policies.base import RoutingPolicy
from lodestar_vllm.sim.cluster_spec import ClusterSpec, InstanceSpec
from lodestar_vllm.sim.engine import EngineRequest, StepResult
from lodestar_vllm.sim.scrape import scrape_metrics
from lodestar_vllm.tokenizer import estimate_tokens, text_block_hashes

# Event kinds; the heap orders by (time, seq) so equal-time events run in the order they were scheduled.
_ARRIVE, _DISPATCH, _STEP, _SCRAPE, _PUBLISH, _FIRST, _DONE, _SCENARIO, _SHARE = range(9)
# An engine that makes no progress for this many consecutive steps holds requests it can never serve.
_MAX_IDLE_STEPS = 64
_IDLE_STEP_S = 0.01


class SimRequest(Protocol):
    """A workload request (``lodestar_vllm.workloads.WorkloadRequest`` satisfies it)."""

    @property
    def request_id(self) -> str: ...
    @property
    def arrival_time(self) -> float: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def session_id(self) -> str | None: ...
    def prompt_text(self) -> str: ...


class Engine(Protocol):
    """The ``EngineCore`` surface the simulator drives."""

    def add_request(self, request: EngineRequest) -> None: ...
    def abort_request(self, request_id: str) -> bool: ...
    def has_unfinished(self) -> bool: ...
    def step(self, now: float) -> StepResult: ...
    def stats(self) -> Any: ...
    def estimate_ttft(self, prompt_len: int, block_hashes: Sequence[int], now: float) -> float: ...
    def cached_tokens(self, request_id: str) -> int: ...


EngineFactory = Callable[[InstanceSpec], tuple[Engine, HardwareInfo]]


def default_engine_factory(spec: InstanceSpec) -> tuple[Engine, HardwareInfo]:
    """A calibrated ``EngineCore`` for the instance's GPU, model and tensor-parallel degree."""
    from lodestar_vllm.sim.engine import EngineCore
    from lodestar_vllm.sim.profiles import get_profile

    profile = get_profile(spec.gpu, spec.model, spec.tensor_parallel)
    gpu = getattr(profile, "gpu", None)  # the profile's GpuSpec: normalised name, memory
    memory = getattr(gpu, "memory_bytes", None)
    hardware = HardwareInfo(
        gpu_class=str(getattr(gpu, "name", None) or spec.gpu),
        gpu_memory_gb=round(memory / 2**30, 1) if isinstance(memory, int | float) else None,
        gpu_count=spec.tensor_parallel,
        tensor_parallel=spec.tensor_parallel,
    )
    return EngineCore(profile, spec.engine), hardware


@dataclass(frozen=True, slots=True)
class ScenarioEvent:
    """A change to the fleet at virtual time ``at``.

    ``slowdown``: step durations of ``instances`` are multiplied by ``factor`` from then on (1.0 restores).
    ``remove``: ``instances`` stop being candidates; requests already there drain.
    ``add``: ``new_instance`` joins (its name must be unused).
    """

    at: float
    action: str
    instances: tuple[str, ...] = ()
    factor: float = 1.0
    new_instance: InstanceSpec | None = None

    def __post_init__(self) -> None:
        if self.action not in {"slowdown", "remove", "add"}:
            raise ValueError(f"unknown scenario action {self.action!r}; known: slowdown, remove, add")
        if self.action == "add" and self.new_instance is None:
            raise ValueError("scenario action 'add' needs new_instance")
        if self.action == "slowdown" and self.factor <= 0:
            raise ValueError("slowdown factor must be > 0")


@dataclass(frozen=True, slots=True)
class SimConfig:
    scrape_interval_s: float = 1.0
    # Extra delay between a scrape and the router seeing it (a slow scraper, a remote metrics store).
    scrape_staleness_s: float = 0.0
    hide_hardware: bool = False
    # One-way router <-> engine transit plus processing; applied on dispatch and on each reply.
    net_delay_s: float = 0.0
    replicas: int = 1
    # How requests are split among router replicas: "session" (hash of the session, else request id) or
    # "roundrobin".
    replica_split: str = "session"
    # Model sharing among replicas: every this many seconds replica 0 exports and the others import.
    share_interval_s: float | None = None

    def __post_init__(self) -> None:
        if self.scrape_interval_s <= 0:
            raise ValueError("scrape_interval_s must be > 0")
        if self.scrape_staleness_s < 0 or self.net_delay_s < 0:
            raise ValueError("delays must be >= 0")
        if self.replicas < 1:
            raise ValueError("replicas must be >= 1")
        if self.replica_split not in {"session", "roundrobin"}:
            raise ValueError(f"unknown replica_split {self.replica_split!r}; known: session, roundrobin")
        if self.share_interval_s is not None and self.share_interval_s <= 0:
            raise ValueError("share_interval_s must be > 0")


@dataclass(slots=True)
class RequestRecord:
    """Everything measured about one request (times are virtual seconds, client side)."""

    request_id: str
    arrival_time: float
    prompt_tokens: int
    output_tokens: int
    session_id: str | None
    replica: int = 0
    instance: str | None = None
    dispatched_at: float | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    cached_tokens: int = 0
    status: OutcomeStatus | None = None
    error: str | None = None
    predicted_ttft: float | None = None
    decision_path: str | None = None

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.arrival_time

    @property
    def e2e(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.arrival_time


@dataclass(slots=True)
class InstanceSummary:
    name: str
    url: str
    gpu: str
    requests: int
    preemptions: int
    prefix_cache_queries: int
    prefix_cache_hits: int
    added_at: float
    removed_at: float | None


@dataclass(slots=True)
class SimResult:
    records: list[RequestRecord]
    instances: list[InstanceSummary]
    end_time: float
    policy_errors: int
    shares: int
    steps: int


@dataclass(slots=True)
class _Instance:
    spec: InstanceSpec
    url: str
    engine: Engine
    hardware: HardwareInfo
    added_at: float
    speed: float = 1.0
    active: bool = True
    removed_at: float | None = None
    stepping: bool = False
    pending: StepResult | None = None
    idle_steps: int = 0
    view: InstanceView | None = None
    requests: int = 0
    # request id -> record, insertion ordered (deterministic abort order)
    inflight: dict[str, RequestRecord] = field(default_factory=dict)


@dataclass(slots=True)
class _Arrival:
    record: RequestRecord
    source: SimRequest
    text: str = ""
    info: RequestInfo | None = None
    hashes: dict[int, list[int]] = field(default_factory=dict)


def instance_url(name: str) -> str:
    return f"http://{name}:8000"


class ClusterSimulator:
    """Replays ``requests`` through ``policies`` (one per router replica) onto the cluster of ``spec``."""

    def __init__(
        self,
        spec: ClusterSpec,
        requests: Sequence[SimRequest],
        config: SimConfig | None = None,
        events: Sequence[ScenarioEvent] = (),
        engine_factory: EngineFactory = default_engine_factory,
    ) -> None:
        self.spec = spec
        self.config = config or SimConfig()
        self._requests = sorted(requests, key=lambda r: r.arrival_time)  # stable: ties keep input order
        self._events = sorted(events, key=lambda e: e.at)
        self._factory = engine_factory
        self._instances: dict[str, _Instance] = {}
        self._by_url: dict[str, _Instance] = {}
        for inst_spec in spec.instances:
            self._add_instance(inst_spec, 0.0)
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._current: _Arrival | None = None
        self._candidates: tuple[InstanceView, ...] | None = None
        self._policies: list[RoutingPolicy] = []
        self._rr = 0
        self._policy_errors = 0
        self._shares = 0
        self._steps = 0
        self._now = 0.0
        self._last_arrival = self._requests[-1].arrival_time if self._requests else 0.0
        self._open = 0
        self._progress: Callable[[int], None] | None = None
        self._ran = False

    # ----- the TTFT probe (oracle-greedy only) -----
    def estimate_ttft(self, url: str, request: RequestInfo, now: float) -> float | None:
        """Engine-internal what-if TTFT of ``request`` at ``url`` (not deployable: reads the true queues)."""
        inst = self._by_url.get(url)
        current = self._current
        if inst is None or current is None or current.info is None:
            return None
        if request.request_id != current.record.request_id:
            return None
        block_size = inst.spec.engine.block_size
        hashes = self._hashes(current, block_size)
        est = inst.engine.estimate_ttft(current.record.prompt_tokens, hashes, now + self.config.net_delay_s)
        return est * inst.speed + 2 * self.config.net_delay_s

    # ----- running -----
    def run(
        self, policies: Sequence[RoutingPolicy], progress: Callable[[int], None] | None = None
    ) -> SimResult:
        """Replay everything; ``progress(n)`` is called with the number of newly finished requests."""
        if len(policies) != self.config.replicas:
            raise ValueError(f"need {self.config.replicas} policies (one per replica), got {len(policies)}")
        if self._ran:
            raise RuntimeError("a simulator runs once: its engines keep their state; build a new one")
        self._ran = True
        self._policies = list(policies)
        # Fleet changes and the first scrape are queued before arrivals: at equal times they apply first.
        for ev in self._events:
            self._push(ev.at, _SCENARIO, ev)
        self._push(0.0, _SCRAPE, None)
        records: list[RequestRecord] = []
        for req in self._requests:
            rec = RequestRecord(req.request_id, req.arrival_time, req.prompt_tokens, req.output_tokens,
                                req.session_id)
            records.append(rec)
            self._push(req.arrival_time, _ARRIVE, _Arrival(rec, req))
        if self.config.share_interval_s is not None and self.config.replicas > 1:
            self._push(self.config.share_interval_s, _SHARE, None)
        self._open = len(records)
        self._progress = progress
        heap = self._heap
        pop = heapq.heappop
        while heap and self._open > 0:
            now, _seq, kind, payload = pop(heap)
            self._now = now
            if kind == _STEP:
                self._on_step(payload, now)
            elif kind == _ARRIVE:
                self._on_arrive(payload, now)
            elif kind == _DISPATCH:
                self._on_dispatch(payload, now)
            elif kind == _FIRST:
                rec, inst = payload
                self._policies[rec.replica].on_first_token(rec.request_id, inst.url, now)
            elif kind == _DONE:
                self._on_done(payload, now)
            elif kind == _SCRAPE:
                self._on_scrape(now)
            elif kind == _PUBLISH:
                inst, metrics = payload
                inst.view = InstanceView(inst.url, metrics, inst.view.hardware if inst.view else None)
                self._candidates = None
            elif kind == _SCENARIO:
                self._on_scenario(payload, now)
            elif kind == _SHARE:
                self._on_share(now)
        return SimResult(
            records=records,
            instances=[self._summary(inst) for inst in self._instances.values()],
            end_time=self._now,
            policy_errors=self._policy_errors,
            shares=self._shares,
            steps=self._steps,
        )

    # ----- events -----
    def _push(self, at: float, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, payload))

    def _on_arrive(self, arrival: _Arrival, now: float) -> None:
        rec = arrival.record
        src = arrival.source
        text = src.prompt_text()
        arrival.text = text
        # The engine tokenizes the text it receives: its count, not the workload's nominal one, is the truth.
        rec.prompt_tokens = estimate_tokens(text)
        rec.replica = self._pick_replica(rec)
        headers = {"x-session-id": rec.session_id} if rec.session_id else {}
        info = RequestInfo(
            request_id=rec.request_id,
            model=self.spec.model,
            prompt_text=text,
            arrival_time=now,
            prompt_tokens=rec.prompt_tokens,
            max_tokens=rec.output_tokens,
            session_id=rec.session_id,
            headers=headers,
        )
        arrival.info = info
        candidates = self._views()
        if not candidates:
            self._finish_failed(rec, now, "no instance available", None)
            return
        self._current = arrival
        policy = self._policies[rec.replica]
        url = None
        try:
            decision = policy.route(info, candidates, now)
            url = decision.url
            rec.predicted_ttft = decision.predicted_ttft
            rec.decision_path = str(decision.path)
        except Exception:  # a broken policy is measured (policy_errors), not fatal to the run
            self._policy_errors += 1
        finally:
            self._current = None
        inst = self._by_url.get(url) if url is not None else None
        if inst is None or not inst.active:
            if url is not None:
                self._policy_errors += 1
            inst = self._by_url[candidates[0].url]
        rec.instance = inst.spec.name
        rec.dispatched_at = now
        inst.requests += 1
        inst.inflight[rec.request_id] = rec
        self._push(now + self.config.net_delay_s, _DISPATCH, (arrival, inst))

    def _on_dispatch(self, payload: tuple[_Arrival, _Instance], now: float) -> None:
        arrival, inst = payload
        rec = arrival.record
        cfg = inst.spec.engine
        hashes = self._hashes(arrival, cfg.block_size)
        arrival.text, arrival.info, arrival.hashes = "", None, {}  # big strings: drop once delivered
        if rec.prompt_tokens + rec.output_tokens > cfg.max_model_len:
            self._fail(inst, rec, now, "prompt + max_tokens exceeds max_model_len", 400)
            return
        try:
            inst.engine.add_request(
                EngineRequest(rec.request_id, rec.prompt_tokens, max(1, rec.output_tokens), hashes, now)
            )
        except ValueError as exc:  # the engine refuses what it can never serve (e.g. larger than its KV)
            self._fail(inst, rec, now, str(exc), 400)
            return
        if not inst.stepping:
            inst.stepping = True
            self._push(now, _STEP, inst)

    def _on_step(self, inst: _Instance, now: float) -> None:
        done = inst.pending
        if done is not None:
            inst.pending = None
            self._deliver(inst, done, now)
        engine = inst.engine
        if not engine.has_unfinished():
            inst.stepping = False
            return
        result = engine.step(now)
        self._steps += 1
        duration = result.duration * inst.speed
        if result.scheduled_tokens <= 0 and not result.finished:
            inst.idle_steps += 1
            if inst.idle_steps >= _MAX_IDLE_STEPS:
                self._abort_stuck(inst, now)
            duration = max(duration, _IDLE_STEP_S)
        else:
            inst.idle_steps = 0
        inst.pending = result
        self._push(now + duration, _STEP, inst)

    def _deliver(self, inst: _Instance, result: StepResult, now: float) -> None:
        delay = self.config.net_delay_s
        inflight = inst.inflight
        for rid in result.first_token:
            rec = inflight.get(rid)
            if rec is None:
                continue
            rec.first_token_at = now + delay
            rec.cached_tokens = inst.engine.cached_tokens(rid)
            self._push(now + delay, _FIRST, (rec, inst))
        for rid, _reason in result.finished:
            rec = inflight.pop(rid, None)
            if rec is None:
                continue
            if rec.first_token_at is None:  # finished in the step that produced its first token
                rec.first_token_at = now + delay
                rec.cached_tokens = inst.engine.cached_tokens(rid)
            rec.finished_at = now + delay
            rec.status = OutcomeStatus.OK
            self._push(now + delay, _DONE, (rec, inst))

    def _on_done(self, payload: tuple[RequestRecord, _Instance], now: float) -> None:
        rec, inst = payload
        self._policies[rec.replica].on_outcome(
            Outcome(
                request_id=rec.request_id,
                url=inst.url,
                dispatched_at=rec.dispatched_at if rec.dispatched_at is not None else rec.arrival_time,
                status=rec.status or OutcomeStatus.FAILED,
                first_token_at=rec.first_token_at,
                finished_at=rec.finished_at,
                prompt_tokens=rec.prompt_tokens,
                completion_tokens=rec.output_tokens if rec.status == OutcomeStatus.OK else 0,
                cached_tokens=rec.cached_tokens,
                http_status=200 if rec.status == OutcomeStatus.OK else 500,
                error=rec.error,
            )
        )
        self._open -= 1
        if self._progress is not None:
            self._progress(1)

    def _fail(self, inst: _Instance, rec: RequestRecord, now: float, error: str, http_status: int) -> None:
        inst.inflight.pop(rec.request_id, None)
        self._finish_failed(rec, now, error, inst)

    def _finish_failed(self, rec: RequestRecord, now: float, error: str, inst: _Instance | None) -> None:
        rec.status = OutcomeStatus.FAILED
        rec.error = error
        rec.finished_at = None
        if inst is None:  # never routed: no attempt to report
            self._open -= 1
            if self._progress is not None:
                self._progress(1)
            return
        self._push(now + self.config.net_delay_s, _DONE, (rec, inst))

    def _abort_stuck(self, inst: _Instance, now: float) -> None:
        for rid in list(inst.inflight):
            rec = inst.inflight[rid]
            if rec.first_token_at is None:
                inst.engine.abort_request(rid)
                self._fail(inst, rec, now, "engine made no progress (request cannot be scheduled)", 500)
        inst.idle_steps = 0

    def _on_scrape(self, now: float) -> None:
        staleness = self.config.scrape_staleness_s
        for inst in self._instances.values():
            if not inst.active:
                continue
            metrics = scrape_metrics(inst.engine.stats(), now)
            if staleness > 0:
                self._push(now + staleness, _PUBLISH, (inst, metrics))
            else:
                inst.view = InstanceView(inst.url, metrics, inst.view.hardware if inst.view else None)
                self._candidates = None
        if now <= self._last_arrival + self.config.scrape_interval_s:
            self._push(now + self.config.scrape_interval_s, _SCRAPE, None)

    def _on_scenario(self, event: ScenarioEvent, now: float) -> None:
        if event.action == "add":
            assert event.new_instance is not None
            self._add_instance(event.new_instance, now)
            return
        for name in event.instances:
            inst = self._instances.get(name)
            if inst is None:
                raise ValueError(f"scenario names unknown instance {name!r}")
            if event.action == "slowdown":
                inst.speed = event.factor
            else:
                inst.active = False
                inst.removed_at = now
        self._candidates = None

    def _on_share(self, now: float) -> None:
        publisher = self._policies[0]
        export = getattr(publisher, "export_checkpoint", None)
        blob = None
        if export is not None:
            try:
                blob = export()
            except Exception:  # nothing to publish yet (no model trained): try again next round
                blob = None
        if blob:
            for policy in self._policies[1:]:
                load = getattr(policy, "import_checkpoint", None)
                try:
                    if load is not None and load(blob):
                        self._shares += 1
                except Exception:  # a refused blob leaves the replica on its own model
                    pass
        if self.config.share_interval_s is not None and now <= self._last_arrival:
            self._push(now + self.config.share_interval_s, _SHARE, None)

    # ----- helpers -----
    def _add_instance(self, spec: InstanceSpec, now: float) -> None:
        if spec.name in self._instances:
            raise ValueError(f"duplicate instance name {spec.name!r}")
        engine, hardware = self._factory(spec)
        url = instance_url(spec.name)
        inst = _Instance(spec, url, engine, hardware, added_at=now)
        shown = None if self.config.hide_hardware else hardware
        inst.view = InstanceView(url, None, shown)
        self._instances[spec.name] = inst
        self._by_url[url] = inst
        self._candidates = None

    def _views(self) -> tuple[InstanceView, ...]:
        if self._candidates is None:
            self._candidates = tuple(
                inst.view for inst in self._instances.values() if inst.active and inst.view is not None
            )
        return self._candidates

    def _pick_replica(self, rec: RequestRecord) -> int:
        n = self.config.replicas
        if n == 1:
            return 0
        if self.config.replica_split == "roundrobin":
            self._rr += 1
            return (self._rr - 1) % n
        key = rec.session_id or rec.request_id
        return zlib.crc32(key.encode()) % n

    @staticmethod
    def _hashes(arrival: _Arrival, block_size: int) -> list[int]:
        hashes = arrival.hashes.get(block_size)
        if hashes is None:
            hashes = text_block_hashes(arrival.text, block_size)
            arrival.hashes[block_size] = hashes
        return hashes

    @staticmethod
    def _summary(inst: _Instance) -> InstanceSummary:
        stats = inst.engine.stats()
        return InstanceSummary(
            name=inst.spec.name,
            url=inst.url,
            gpu=inst.spec.gpu,
            requests=inst.requests,
            preemptions=int(stats.num_preemptions_total),
            prefix_cache_queries=int(stats.prefix_cache_queries_total),
            prefix_cache_hits=int(stats.prefix_cache_hits_total),
            added_at=inst.added_at,
            removed_at=inst.removed_at,
        )
