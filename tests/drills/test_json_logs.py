"""LODESTAR_LOG_FORMAT=json: lodestar's events come out as one JSON object per line, with their fields."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from lodestar_vllm.logging_setup import LOGGER_NAME, configure_logging, remove_json_handler
from lodestar_vllm.policies.learned.policy import LearnedPolicy
from tests.drills.conftest import FAST_LEARNED, completion, engines, router, settled, wait_for


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    logger = logging.getLogger(LOGGER_NAME)
    saved = (logger.level, logger.propagate)
    stream = io.StringIO()
    configure_logging({"LODESTAR_LOG_FORMAT": "json"}, stream=stream)
    yield stream
    remove_json_handler()
    logger.setLevel(saved[0])
    logger.propagate = saved[1]


def _events(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.slow
def test_model_swap_and_checkpoint_refusal_are_json_events(json_log: io.StringIO) -> None:
    with engines(2) as es, router([e.url for e in es], options=FAST_LEARNED) as r:
        with httpx.Client(base_url=r.url, timeout=30) as client:
            for i in range(50):
                client.post("/v1/completions", json=completion(f"log {i} " * 20))
        wait_for(lambda: settled(r) and r.runtime.policy.model is not None, 60, "outcomes and a first model")
    policy = LearnedPolicy(seed=0, **FAST_LEARNED)
    try:
        assert policy.import_checkpoint(b"garbage") is False
    finally:
        policy.close()
    events = _events(json_log)  # every line parses as JSON
    swaps = [e for e in events if e.get("event") == "model_swap"]
    refusals = [e for e in events if e.get("event") == "checkpoint_refused"]
    assert swaps and swaps[0]["logger"] == "lodestar_vllm.trainer" and "train_samples" in swaps[0]
    assert refusals and refusals[0]["level"] == "WARNING" and refusals[0]["error"]


def test_configure_logging_rejects_typos_and_is_idempotent() -> None:
    with pytest.raises(ValueError, match="LODESTAR_LOG_FORMAT"):
        configure_logging({"LODESTAR_LOG_FORMAT": "jsn"})
    with pytest.raises(ValueError, match="LODESTAR_LOG_LEVEL"):
        configure_logging({"LODESTAR_LOG_FORMAT": "json", "LODESTAR_LOG_LEVEL": "LOUD"})
    logger = logging.getLogger(LOGGER_NAME)
    saved = (logger.level, logger.propagate)
    try:
        first = configure_logging({"LODESTAR_LOG_FORMAT": "json"}, stream=io.StringIO())
        assert configure_logging({"LODESTAR_LOG_FORMAT": "json"}) is first
        assert sum(1 for h in logger.handlers if h is first) == 1
        assert configure_logging({"LODESTAR_LOG_FORMAT": "text"}) is None and first in logger.handlers
    finally:
        remove_json_handler()
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    assert first not in logger.handlers
