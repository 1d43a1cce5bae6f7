import pytest

from lodestar_vllm.policies.heuristics.inflight import InFlightTracker


def test_dispatch_first_token_finish_move_counters():
    t = InFlightTracker()
    t.dispatch("a", "u1", 0.0, prefill=100, held=10)
    t.dispatch("b", "u1", 0.1, prefill=50, held=5)
    t.dispatch("c", "u2", 0.2, prefill=7)
    load = t.load("u1")
    assert (load.requests, load.prefill_requests, load.prefill, load.held) == (2, 2, 150, 15)
    t.first_token("a")
    load = t.load("u1")
    assert (load.requests, load.prefill_requests, load.decode_requests, load.prefill, load.held) == (2, 1, 1, 50, 15)
    t.first_token("a")  # a second first-token event changes nothing
    assert t.load("u1").prefill == 50
    t.finish("a")
    t.finish("a")
    assert (t.load("u1").requests, t.load("u1").held) == (1, 5)
    t.finish("b")
    assert t.requests("u1") == 0 and t.urls() == ["u2"]


def test_unknown_events_are_ignored():
    t = InFlightTracker()
    t.first_token("nope")
    t.finish("nope")
    assert len(t) == 0 and t.requests("u") == 0


def test_retry_with_same_id_replaces_the_earlier_attempt():
    t = InFlightTracker()
    t.dispatch("a", "u1", 0.0, held=3)
    t.dispatch("a", "u2", 1.0, held=4)
    assert t.requests("u1") == 0 and t.requests("u2") == 1 and len(t) == 1


def test_stale_records_expire_after_ttl():
    t = InFlightTracker(ttl=10.0)
    t.dispatch("old", "u1", 0.0, held=1)
    t.dispatch("new", "u1", 8.0, held=1)
    assert t.expire(9.0) == 0
    assert t.expire(10.5) == 1
    assert t.requests("u1") == 1 and t.load("u1").held == 1


def test_forget_drops_urls_and_their_records():
    t = InFlightTracker()
    t.dispatch("a", "u1", 0.0)
    t.dispatch("b", "u2", 0.0)
    t.forget(["u1"])
    assert t.requests("u1") == 0 and len(t) == 1
    t.finish("a")  # the outcome of a forgotten request arrives later: harmless
    assert t.requests("u2") == 1


def test_record_count_is_bounded():
    t = InFlightTracker(max_records=3)
    for i in range(10):
        t.dispatch(str(i), "u", float(i))
    assert len(t) == 3 and t.requests("u") == 3


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError):
        InFlightTracker(ttl=0)
