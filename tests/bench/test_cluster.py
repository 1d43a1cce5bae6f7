"""The virtual-time cluster simulator, driven by a transparent fake engine (tests/bench/fakes.py)."""

from __future__ import annotations

import math

import pytest

from lodestar_vllm.core.types import EngineMetrics, HardwareInfo, InstanceView, OutcomeStatus, RequestInfo
from lodestar_vllm.sim.cluster import ClusterSimulator, ScenarioEvent, SimConfig, instance_url
from tests.bench.fakes import Recording, RoundRobin, fake_factory, make_requests, two_gpu_cluster


def _run(n: int = 40, config: SimConfig | None = None, events=(), seed: int = 1, **req_kw):
    sim = ClusterSimulator(two_gpu_cluster(), make_requests(n, **req_kw), config, events, engine_factory=fake_factory)
    policy = Recording(seed=seed)
    return sim.run([policy]), policy


def test_every_request_completes_once_with_one_outcome_each() -> None:
    result, policy = _run(40)
    assert [r.status for r in result.records] == [OutcomeStatus.OK] * 40
    assert sorted(o.request_id for o in policy.outcomes) == sorted(r.request_id for r in result.records)
    assert sorted(rid for rid, _url, _t in policy.first_tokens) == sorted(r.request_id for r in result.records)
    for rec in result.records:
        assert rec.arrival_time <= rec.dispatched_at <= rec.first_token_at <= rec.finished_at


def test_same_seed_same_results_different_seed_different_routing() -> None:
    def fingerprint(seed: int) -> list[tuple]:
        result, _ = _run(60, seed=seed)
        return [(r.request_id, r.instance, r.first_token_at, r.finished_at, r.cached_tokens) for r in result.records]

    assert fingerprint(3) == fingerprint(3)
    assert fingerprint(3) != fingerprint(4)


def test_outcome_carries_tokens_and_cached_tokens() -> None:
    # Every prompt starts with the same 128 tokens: the second request on an engine hits 8 blocks of 16.
    result, policy = _run(6, shared=128, prompt=300, output=5, gap_s=1.0)
    by_id = {o.request_id: o for o in policy.outcomes}
    for rec in result.records:
        out = by_id[rec.request_id]
        assert out.url == instance_url(rec.instance)
        assert out.prompt_tokens == rec.prompt_tokens == 300
        assert out.completion_tokens == 5
        assert out.ttft == pytest.approx(rec.first_token_at - rec.dispatched_at)
    first_per_engine = {}
    for rec in result.records:
        expected = 0 if rec.instance not in first_per_engine else 128
        first_per_engine.setdefault(rec.instance, rec.request_id)
        assert by_id[rec.request_id].cached_tokens == expected


def test_policy_sees_metrics_only_as_of_the_last_scrape() -> None:
    cfg = SimConfig(scrape_interval_s=0.5, scrape_staleness_s=0.2)
    _result, policy = _run(60, cfg, gap_s=0.037)
    saw_none = saw_some = 0
    for now, _req, views in policy.seen:
        for view in views:
            if view.metrics is None:
                # nothing published yet: the first scrape (t=0) becomes visible at t=0.2
                assert now < 0.2 + 1e-9
                saw_none += 1
                continue
            saw_some += 1
            scraped = view.metrics.scraped_at
            assert math.isclose(scraped / 0.5, round(scraped / 0.5), abs_tol=1e-9)  # only at scrape instants
            assert scraped + 0.2 <= now + 1e-9  # not visible before the staleness delay
            assert now - scraped < 0.5 + 0.2 + 1e-9  # and it is the latest visible one
    assert saw_none and saw_some


def test_scraped_metrics_lag_the_engine() -> None:
    # Back-to-back arrivals within one scrape interval: the router keeps seeing the same (stale) snapshot.
    cfg = SimConfig(scrape_interval_s=10.0)
    _result, policy = _run(20, cfg, gap_s=0.01, prompt=2000, output=50)
    snapshots = {id(v.metrics) for _n, _r, views in policy.seen for v in views if v.metrics is not None}
    assert len(snapshots) == 2  # one scrape per engine at t=0; arrivals end before the next one at t=10


def test_router_sees_only_production_facts() -> None:
    _result, policy = _run(10)
    for _now, req, views in policy.seen:
        assert type(req) is RequestInfo
        assert req.prompt_tokens == 300 and req.max_tokens == 20 and req.prompt_text
        assert req.session_id is not None and req.headers["x-session-id"] == req.session_id
        for view in views:
            assert type(view) is InstanceView
            assert view.metrics is None or type(view.metrics) is EngineMetrics
            assert type(view.hardware) is HardwareInfo and view.hardware.gpu_class == "A100-40GB"
            # a frozen dataclass of plain values: no reference to the engine object anywhere
            for value in (view.url, view.healthy):
                assert isinstance(value, str | bool)


def test_hide_hardware() -> None:
    _result, policy = _run(5, SimConfig(hide_hardware=True))
    assert all(v.hardware is None for _n, _r, views in policy.seen for v in views)


def test_slowdown_event_stretches_steps() -> None:
    base, _ = _run(30, gap_s=0.2, output=30)
    slow, _ = _run(30, events=[ScenarioEvent(at=0.0, action="slowdown", instances=("a100-40gb-0", "a100-40gb-1"),
                                             factor=2.0)], gap_s=0.2, output=30)
    for a, b in zip(base.records, slow.records, strict=True):
        assert b.e2e == pytest.approx(2 * a.e2e, rel=0.35)
    assert sum(r.e2e for r in slow.records) > 1.8 * sum(r.e2e for r in base.records)


def test_remove_and_add_instances() -> None:
    from lodestar_vllm.sim.cluster_spec import InstanceSpec

    events = [
        ScenarioEvent(at=1.0, action="remove", instances=("a100-40gb-0",)),
        ScenarioEvent(at=2.0, action="add", new_instance=InstanceSpec("new-0", "L4", "m")),
    ]
    result, policy = _run(60, events=events, gap_s=0.05)
    for now, _req, views in policy.seen:
        urls = {v.url for v in views}
        assert (instance_url("a100-40gb-0") in urls) == (now < 1.0)
        assert (instance_url("new-0") in urls) == (now >= 2.0)
    assert all(r.status == OutcomeStatus.OK for r in result.records)
    assert {i.name: i.removed_at for i in result.instances}["a100-40gb-0"] == 1.0


def test_bad_policy_choice_is_counted_and_routed_safely() -> None:
    class Broken(RoundRobin):
        def route(self, request, candidates, now):
            raise RuntimeError("boom")

    sim = ClusterSimulator(two_gpu_cluster(), make_requests(5), engine_factory=fake_factory)
    result = sim.run([Broken()])
    assert result.policy_errors == 5
    assert all(r.status == OutcomeStatus.OK for r in result.records)


def test_request_longer_than_max_model_len_fails_cleanly() -> None:
    spec = two_gpu_cluster()
    from lodestar_vllm.sim.cluster_spec import ClusterSpec

    small = ClusterSpec.from_mapping({"model": "m", "engine": {"max_model_len": 256},
                                      "instances": [{"gpu": "A100-40GB", "count": 2}]})
    assert spec != small
    sim = ClusterSimulator(small, make_requests(3, prompt=300), engine_factory=fake_factory)
    policy = Recording()
    result = sim.run([policy])
    assert [r.status for r in result.records] == [OutcomeStatus.FAILED] * 3
    assert [o.status for o in policy.outcomes] == [OutcomeStatus.FAILED] * 3
    assert "max_model_len" in result.records[0].error


def test_replicas_split_by_session_and_share_models() -> None:
    class Sharing(RoundRobin):
        def __init__(self) -> None:
            super().__init__()
            self.routed = 0
            self.imported: list[bytes] = []

        def route(self, request, candidates, now):
            self.routed += 1
            return super().route(request, candidates, now)

        def export_checkpoint(self) -> bytes:
            return b"model-%d" % self.routed

        def import_checkpoint(self, blob: bytes) -> bool:
            self.imported.append(blob)
            return True

    cfg = SimConfig(replicas=3, share_interval_s=0.5)
    sim = ClusterSimulator(two_gpu_cluster(), make_requests(40, gap_s=0.05), cfg, engine_factory=fake_factory)
    policies = [Sharing(), Sharing(), Sharing()]
    result = sim.run(policies)
    by_session: dict[str, set[int]] = {}
    for rec in result.records:
        by_session.setdefault(rec.session_id, set()).add(rec.replica)
    assert all(len(replicas) == 1 for replicas in by_session.values())
    assert sum(p.routed for p in policies) == 40
    assert policies[0].imported == [] and policies[1].imported and policies[1].imported == policies[2].imported
    assert result.shares == 2 * len(policies[1].imported)
    with pytest.raises(ValueError, match="one per replica"):
        ClusterSimulator(two_gpu_cluster(), make_requests(2), cfg, engine_factory=fake_factory).run([RoundRobin()])


def test_sharing_survives_a_publisher_without_a_model() -> None:
    class NoModelYet(RoundRobin):
        def export_checkpoint(self) -> bytes:
            raise RuntimeError("no trained model to export yet")

        def import_checkpoint(self, blob: bytes) -> bool:
            raise AssertionError("nothing was published")

    cfg = SimConfig(replicas=2, share_interval_s=0.5)
    sim = ClusterSimulator(two_gpu_cluster(), make_requests(20), cfg, engine_factory=fake_factory)
    result = sim.run([NoModelYet(), NoModelYet()])
    assert result.shares == 0 and all(r.status == OutcomeStatus.OK for r in result.records)


def test_a_simulator_runs_once() -> None:
    sim = ClusterSimulator(two_gpu_cluster(), make_requests(3), engine_factory=fake_factory)
    sim.run([RoundRobin()])
    with pytest.raises(RuntimeError, match="runs once"):
        sim.run([RoundRobin()])
