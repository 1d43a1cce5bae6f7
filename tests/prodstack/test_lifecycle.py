"""Every routed attempt reaches policy.on_outcome exactly once, whatever happens to its stream."""

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from lodestar_vllm.core.types import Decision, OutcomeStatus, RequestInfo
from lodestar_vllm.integrations.production_stack.lifecycle import Attempt, LifecycleTracker
from tests.prodstack.stub_policy import StubPolicy

URL = "http://a:8000"


def _tracker(policy: StubPolicy, timeout: float = 60.0) -> tuple[LifecycleTracker, list[float]]:
    now = [0.0]
    return LifecycleTracker(policy, clock=lambda: now[0], pending_timeout=timeout), now


def _route(tracker: LifecycleTracker, policy: StubPolicy, url: str = URL, rid: str | None = None) -> Attempt:
    attempt_id = tracker.new_attempt_id(rid)
    info = RequestInfo(request_id=attempt_id, model="m", prompt_text="p", arrival_time=0.0)
    policy.outstanding[url] = policy.outstanding.get(url, 0) + 1
    attempt = Attempt(attempt_id, url, info, Decision(url=url), routed_at=0.0)
    tracker.register(attempt)
    return attempt


async def _host_stream(status: int, chunks: list[bytes], fail_at: int | None = None,
                       gap: float = 0.0) -> AsyncIterator[object]:
    if fail_at == -1:
        raise ConnectionError("connect refused")
    yield {"content-type": "text/event-stream"}, status
    for i, chunk in enumerate(chunks):
        if fail_at == i:
            raise ConnectionResetError("engine died")
        await asyncio.sleep(gap)
        yield chunk


async def _drain(stream: AsyncIterator[object]) -> list[object]:
    return [item async for item in stream]


async def test_ok_stream_reports_first_token_usage_and_one_outcome() -> None:
    policy = StubPolicy()
    tracker, now = _tracker(policy)
    _route(tracker, policy, rid="req-1")
    attempt = tracker.claim(URL, "req-1")
    assert attempt is not None and tracker.claim(URL, "req-1") is None  # claimed once
    usage = {"prompt_tokens": 12, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 8}}
    chunks = [b"data: {}\n\n", b"data: " + json.dumps({"usage": usage}).encode() + b"\n\n"]
    items = await _drain(tracker.observe(attempt, _host_stream(200, chunks)))
    assert items[1:] == chunks  # the client gets exactly what the engine sent
    assert policy.first_tokens == [("req-1", URL)]
    [outcome] = policy.outcomes
    assert (outcome.status, outcome.request_id, outcome.http_status) == (OutcomeStatus.OK, "req-1", 200)
    assert (outcome.prompt_tokens, outcome.completion_tokens, outcome.cached_tokens) == (12, 3, 8)
    assert policy.outstanding[URL] == 0
    tracker.finish(attempt, OutcomeStatus.FAILED)  # a late second report is ignored
    assert len(policy.outcomes) == 1


@pytest.mark.parametrize("fail_at", [-1, 1])
async def test_failures_before_and_after_first_byte(fail_at: int) -> None:
    policy = StubPolicy()
    tracker, _ = _tracker(policy)
    _route(tracker, policy)
    attempt = tracker.claim(URL, "host-id")
    with pytest.raises(OSError):
        await _drain(tracker.observe(attempt, _host_stream(200, [b"a", b"b"], fail_at=fail_at)))
    [outcome] = policy.outcomes
    assert outcome.status is OutcomeStatus.FAILED and outcome.error
    assert (outcome.first_token_at is None) == (fail_at == -1)


async def test_http_error_status_is_a_failure() -> None:
    policy = StubPolicy()
    tracker, _ = _tracker(policy)
    _route(tracker, policy)
    await _drain(tracker.observe(tracker.claim(URL, "x"), _host_stream(500, [b'{"error": 1}'])))
    assert [(o.status, o.http_status) for o in policy.outcomes] == [(OutcomeStatus.FAILED, 500)]


async def test_client_abort_by_closing_the_stream() -> None:
    policy = StubPolicy()
    tracker, _ = _tracker(policy)
    _route(tracker, policy)
    stream = tracker.observe(tracker.claim(URL, "x"), _host_stream(200, [b"a", b"b", b"c"]))
    await anext(stream)
    await anext(stream)
    await stream.aclose()  # what the server does when the client disconnects mid-stream
    [outcome] = policy.outcomes
    assert outcome.status is OutcomeStatus.ABORTED and outcome.first_token_at is not None


async def test_client_abort_by_cancellation() -> None:
    policy = StubPolicy()
    tracker, _ = _tracker(policy)
    _route(tracker, policy)
    stream = tracker.observe(tracker.claim(URL, "x"), _host_stream(200, [b"a"] * 50, gap=0.05))
    task = asyncio.ensure_future(_drain(stream))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [o.status for o in policy.outcomes] == [OutcomeStatus.ABORTED]


async def test_dispatch_not_ours_is_not_claimed() -> None:
    policy = StubPolicy()
    tracker, _ = _tracker(policy)
    _route(tracker, policy, url=URL)
    assert tracker.claim("http://other:8000", "x") is None  # e.g. a ?id= pinned request
    assert tracker.counts()["pending"] == 1


def test_undispatched_decisions_fail_after_timeout_and_on_reroute() -> None:
    policy = StubPolicy()
    tracker, now = _tracker(policy, timeout=10.0)
    _route(tracker, policy)
    _route(tracker, policy)  # routed again in the same context without dispatching the first
    assert [o.error for o in policy.outcomes] == ["not dispatched"]
    now[0] = 11.0
    assert tracker.sweep() == 1
    assert [o.status for o in policy.outcomes] == [OutcomeStatus.FAILED] * 2
    assert tracker.counts()["pending"] == 0 and policy.outstanding[URL] == 0


def test_pending_table_is_bounded() -> None:
    policy = StubPolicy()
    tracker, _ = _tracker(policy)
    tracker.max_attempts = 3
    for _ in range(5):
        # each in its own context, as concurrent requests are
        import contextvars

        contextvars.copy_context().run(_route, tracker, policy)
    assert tracker.counts()["pending"] == 3 and len(policy.outcomes) == 2


def test_attempt_ids_unique_per_attempt() -> None:
    tracker, _ = _tracker(StubPolicy())
    ids = [tracker.new_attempt_id(None) for _ in range(3)]
    assert len(set(ids)) == 3
    first = tracker.new_attempt_id("abc")
    assert first == "abc"



def test_attempts_without_an_end_are_failed_after_the_attempt_timeout() -> None:
    policy = StubPolicy()
    tracker, now = _tracker(policy)
    tracker.attempt_timeout = 100.0
    _route(tracker, policy)
    attempt = tracker.claim(URL, "x")  # dispatched, but its end never arrives
    now[0] = 50.0
    assert tracker.sweep() == 0 and tracker.counts()["in_flight"] == 1
    now[0] = 101.0
    assert tracker.sweep() == 1
    assert [(o.status, o.error) for o in policy.outcomes] == [
        (OutcomeStatus.FAILED, "no end of the attempt observed (timeout)")]
    assert attempt.outcome is not None and tracker.counts()["in_flight"] == 0
