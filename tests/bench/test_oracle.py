"""oracle-greedy: argmin of the true TTFT estimate, read through the simulator's probe."""

from __future__ import annotations

from lodestar_vllm.core.types import DecisionPath, InstanceView, RequestInfo
from lodestar_vllm.sim.cluster import ClusterSimulator, instance_url
from lodestar_vllm.sim.oracle import OracleGreedyPolicy
from tests.bench.fakes import FakeRequest, fake_factory, make_requests, two_gpu_cluster


class TableProbe:
    def __init__(self, table: dict[str, float | None]) -> None:
        self.table = table

    def estimate_ttft(self, url: str, request: RequestInfo, now: float) -> float | None:
        value = self.table[url]
        if value == -1:
            raise RuntimeError("probe failure")
        return value


REQ = RequestInfo("r", "m", "hello", 0.0)
VIEWS = [InstanceView("a"), InstanceView("b"), InstanceView("c")]


def test_picks_the_lowest_estimate() -> None:
    decision = OracleGreedyPolicy(TableProbe({"a": 0.5, "b": 0.1, "c": 0.3})).route(REQ, VIEWS, 0.0)
    assert decision.url == "b" and decision.predicted_ttft == 0.1 and decision.path == DecisionPath.MODEL


def test_ties_go_to_the_first_and_failures_are_skipped() -> None:
    assert OracleGreedyPolicy(TableProbe({"a": 0.2, "b": 0.2, "c": 0.3})).route(REQ, VIEWS, 0.0).url == "a"
    assert OracleGreedyPolicy(TableProbe({"a": -1, "b": None, "c": 0.3})).route(REQ, VIEWS, 0.0).url == "c"
    fallback = OracleGreedyPolicy(TableProbe({"a": None, "b": -1, "c": None})).route(REQ, VIEWS, 0.0)
    assert fallback.url == "a" and fallback.path == DecisionPath.FALLBACK


def test_in_the_simulator_it_avoids_the_busy_engine() -> None:
    # A long request lands on engine 0 at t=0 (the oracle's tie rule); the next short one must go to engine 1,
    # whose true queue is empty, and a later one after both drained goes back to the first (tie).
    reqs = [FakeRequest("long", 0.0, 5000, 5), FakeRequest("short", 0.01, 200, 5), FakeRequest("late", 30.0, 200, 5)]
    sim = ClusterSimulator(two_gpu_cluster(), reqs, engine_factory=fake_factory)
    result = sim.run([OracleGreedyPolicy(sim)])
    placed = {r.request_id: r.instance for r in result.records}
    assert placed == {"long": "a100-40gb-0", "short": "a100-40gb-1", "late": "a100-40gb-0"}


def test_probe_matches_engine_estimate_and_rejects_other_requests() -> None:
    sim = ClusterSimulator(two_gpu_cluster(), make_requests(1), engine_factory=fake_factory)
    # Outside a routing call there is no current request: the probe answers None instead of guessing.
    assert sim.estimate_ttft(instance_url("a100-40gb-0"), REQ, 0.0) is None

    seen: list[float | None] = []

    class Spy(OracleGreedyPolicy):
        def route(self, request, candidates, now):
            seen.append(sim.estimate_ttft(candidates[0].url, request, now))
            seen.append(sim.estimate_ttft(candidates[0].url, REQ, now))  # not the request being routed
            return super().route(request, candidates, now)

    sim.run([Spy(sim)])
    assert seen[0] is not None and seen[0] > 0 and seen[1] is None


def test_probe_agrees_with_the_simulated_ttft_on_idle_engines_slowdown_included() -> None:
    import pytest

    from lodestar_vllm.bench.presets import load_cluster
    from lodestar_vllm.sim.cluster import ScenarioEvent

    reqs = make_requests(4, gap_s=20.0, prompt=3000, output=10)  # each alone on an idle fleet
    spec = load_cluster("tiny").spec
    slow_all = ScenarioEvent(at=30.0, action="slowdown", instances=("a100-40gb-0", "l4-0"), factor=2.0)
    sim = ClusterSimulator(spec, reqs, events=[slow_all])
    result = sim.run([OracleGreedyPolicy(sim)])
    ttfts = [r.ttft for r in result.records]
    for rec in result.records:
        assert rec.instance == "a100-40gb-0"  # the faster GPU
        assert rec.predicted_ttft == pytest.approx(rec.ttft, rel=1e-6)
    assert ttfts[2] == pytest.approx(2 * ttfts[0], rel=1e-6)  # after the slowdown, both doubled
