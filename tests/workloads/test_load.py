"""load_workload: name resolution, overrides, and the rate_scale / duration / max_requests / jitter shaping."""

import json
from pathlib import Path

import numpy as np
import pytest

from lodestar_vllm.workloads import UnknownWorkloadError, load_workload, workload_names


def _arrivals(reqs) -> np.ndarray:
    return np.array([r.arrival_time for r in reqs])


def test_names_resolve_and_come_sorted() -> None:
    names = workload_names()
    for expected in ("prefix-sharing", "multi-round-qa", "mooncake-like", "azure-code-like", "azure-conv-like",
                     "mooncake-conversation", "azure-code", "azure-conv"):
        assert expected in names
    for name in names:
        if name in ("mooncake-conversation", "azure-code", "azure-conv"):
            continue
        reqs = load_workload(name, max_requests=50)
        assert len(reqs) == 50 and np.all(np.diff(_arrivals(reqs)) >= 0), name
        assert len({r.request_id for r in reqs}) == 50


def test_rate_scale_compresses_time() -> None:
    base = load_workload("prefix-sharing", max_requests=100)
    fast = load_workload("prefix-sharing", max_requests=100, rate_scale=4.0)
    assert np.allclose(_arrivals(fast), _arrivals(base) / 4.0)
    assert [r.request_id for r in fast] == [r.request_id for r in base]


def test_duration_truncates_in_scaled_time() -> None:
    reqs = load_workload("prefix-sharing", duration=30.0, rate_scale=2.0)
    full = load_workload("prefix-sharing", rate_scale=2.0)
    assert _arrivals(reqs).max() < 30.0
    assert [r.request_id for r in reqs] == [r.request_id for r in full if r.arrival_time < 30.0]


def test_max_requests_keeps_the_earliest() -> None:
    reqs = load_workload("multi-round-qa", max_requests=37)
    full = load_workload("multi-round-qa")
    assert [r.request_id for r in reqs] == [r.request_id for r in full[:37]]


def test_jitter_delays_by_at_most_its_width_and_resorts() -> None:
    base = load_workload("prefix-sharing", max_requests=400, jitter=0.0)
    jittered = load_workload("prefix-sharing", max_requests=400, jitter=2.0)
    by_id = {r.request_id: r.arrival_time for r in base}
    delays = np.array([r.arrival_time - by_id[r.request_id] for r in jittered if r.request_id in by_id])
    assert delays.min() >= 0 and delays.max() < 2.0 and delays.std() > 0.3
    assert np.all(np.diff(_arrivals(jittered)) >= 0)
    again = load_workload("prefix-sharing", max_requests=400, jitter=2.0)
    assert again == jittered


def test_mooncake_files_default_to_bucket_jitter(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text("".join(
        json.dumps({"timestamp": 0, "input_length": 600, "output_length": 3, "hash_ids": [0, i + 1]}) + "\n"
        for i in range(200)
    ))
    spread = _arrivals(load_workload(str(path)))
    assert 2.0 < spread.max() < 3.0  # one 3 s bucket spread over the bucket
    assert np.all(_arrivals(load_workload(str(path), jitter=0.0)) == 0.0)


def test_generic_jsonl_path(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "abcd", "timestamp": 2}\n{"prompt": "efgh", "timestamp": 1}\n')
    reqs = load_workload(str(path))
    assert [r.prompt_text() for r in reqs] == ["efgh", "abcd"]


def test_overrides_and_percent_names() -> None:
    a = load_workload("prefix-sharing-25", max_requests=20)
    b = load_workload("prefix-sharing:sharing=0.25", max_requests=20)
    assert a == b
    rate = load_workload("multi-round-qa:qps=8,users=8", duration=100)
    assert len(rate) > len(load_workload("multi-round-qa:qps=2,users=8", duration=100)) * 3


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no-such-workload", "unknown workload"),
        ("prefix-sharing:bogus=1", "accepted: sharing"),
        ("prefix-sharing:sharing=2", "sharing must be"),
        ("azure-code:rate=2", "takes no parameters"),
    ],
)
def test_bad_names_get_clear_errors(name: str, message: str) -> None:
    with pytest.raises(UnknownWorkloadError, match=message):
        load_workload(name)


def test_bad_shaping_arguments() -> None:
    for kwargs in ({"rate_scale": 0}, {"duration": -1}, {"max_requests": 0}, {"jitter": -0.5}):
        with pytest.raises(ValueError):
            load_workload("prefix-sharing", **kwargs)


def test_named_trace_absent_says_where_to_look(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LODESTAR_SHARED", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="LODESTAR_SHARED"):
        load_workload("mooncake-conversation")
