"""Outlier ejection: failing engines are avoided for a while, by any wrapped policy."""

from lodestar_vllm.core.types import InstanceView, Outcome, OutcomeStatus, RequestInfo
from lodestar_vllm.policies.outlier_ejection import OutlierEjection
from lodestar_vllm.policies.registry import create_policy

URLS = ["http://a", "http://b"]


def _request(i: int, now: float) -> RequestInfo:
    return RequestInfo(request_id=f"r{i}", model="m", prompt_text="hello " * 50, arrival_time=now)


def _views() -> list[InstanceView]:
    return [InstanceView(url=u) for u in URLS]


def _fail(policy: OutlierEjection, i: int, url: str, now: float, status: OutcomeStatus = OutcomeStatus.FAILED) -> None:
    policy.on_outcome(Outcome(request_id=f"f{i}", url=url, dispatched_at=now, finished_at=now, status=status,
                              http_status=500))


def test_engine_failing_in_a_row_is_avoided_then_readmitted() -> None:
    policy = OutlierEjection(create_policy("roundrobin", seed=0), consecutive_failures=3, base_ejection_s=5)
    for i in range(3):
        _fail(policy, i, "http://a", now=1.0)
    assert policy.ejected(1.0) == ["http://a"]
    chosen = {policy.route(_request(i, 2.0), _views(), 2.0).url for i in range(10)}
    assert chosen == {"http://b"}
    # after the ejection expires, round-robin sends traffic there again
    chosen = {policy.route(_request(i, 7.0), _views(), 7.0).url for i in range(10)}
    assert chosen == set(URLS)


def test_fewer_failures_than_the_threshold_or_aborts_do_not_eject() -> None:
    policy = OutlierEjection(create_policy("roundrobin", seed=0), consecutive_failures=3)
    _fail(policy, 0, "http://a", 1.0)
    _fail(policy, 1, "http://a", 1.0)
    policy.on_outcome(Outcome(request_id="ok", url="http://a", dispatched_at=1.0, finished_at=1.1,
                              status=OutcomeStatus.OK, first_token_at=1.05))
    _fail(policy, 2, "http://a", 1.2)
    for i in range(5):
        _fail(policy, 10 + i, "http://a", 1.3, status=OutcomeStatus.ABORTED)
    assert policy.ejected(1.5) == []


def test_repeated_ejections_grow_and_all_ejected_fleet_is_still_served() -> None:
    policy = OutlierEjection(create_policy("least-request", seed=0), consecutive_failures=1,
                             base_ejection_s=5, max_ejection_s=12)
    _fail(policy, 0, "http://a", 0.0)
    assert policy.ejected(4.9) == ["http://a"] and policy.ejected(5.1) == []
    _fail(policy, 1, "http://a", 6.0)
    assert policy.ejected(15.9) == ["http://a"] and policy.ejected(16.1) == []  # 2 x 5 s
    _fail(policy, 2, "http://a", 20.0)
    assert policy.ejected(31.9) == ["http://a"] and policy.ejected(32.1) == []  # capped at 12 s
    _fail(policy, 3, "http://b", 21.0)
    assert policy.route(_request(0, 22.0), _views(), 22.0).url in URLS  # nobody healthy: still a candidate
    assert policy.ejections_total == 4


def test_wrapper_delegates_to_the_inner_policy() -> None:
    inner = create_policy("learned", seed=0)
    policy = OutlierEjection(inner)
    try:
        assert policy.name == inner.name
        assert policy.status() is not None
    finally:
        policy.close()
