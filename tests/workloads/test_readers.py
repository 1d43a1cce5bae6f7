"""Trace readers on small inline samples, including the errors bad input gets."""

import json
from pathlib import Path

import pytest

from lodestar_vllm.tokenizer import estimate_tokens
from lodestar_vllm.workloads.readers import (
    WorkloadFormatError,
    is_mooncake,
    read_azure_csv,
    read_jsonl,
    read_mooncake,
)

MOONCAKE = [
    {"timestamp": 1000, "input_length": 1100, "output_length": 10, "hash_ids": [0, 1, 2]},
    {"timestamp": 1000, "input_length": 1300, "output_length": 20, "hash_ids": [0, 1, 3]},
    {"timestamp": 4000, "input_length": 600, "output_length": 5, "hash_ids": [0, 4]},
]


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_mooncake_lengths_times_and_shared_blocks(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "m.jsonl", MOONCAKE)
    assert is_mooncake(path)
    reqs = read_mooncake(path)
    assert [r.arrival_time for r in reqs] == [0.0, 0.0, 3.0]  # relative to the first record
    assert [r.output_tokens for r in reqs] == [10, 20, 5]
    texts = [r.prompt_text() for r in reqs]
    assert [estimate_tokens(t) for t in texts] == [1100, 1300, 600]
    chars_per_block = 512 * 4
    # equal hash ids -> equal text; different ids -> different text
    assert texts[0][: 2 * chars_per_block] == texts[1][: 2 * chars_per_block]
    assert texts[0][2 * chars_per_block : 2 * chars_per_block + 12] != texts[1][2 * chars_per_block : 2 * chars_per_block + 12]
    assert texts[2][:chars_per_block] == texts[0][:chars_per_block]
    assert texts[2][chars_per_block:] != texts[0][chars_per_block : chars_per_block + 88 * 4]
    # sessions are inferred: sharing more than the common first block continues a conversation
    assert reqs[0].session_id == reqs[1].session_id != reqs[2].session_id


def test_mooncake_rejects_lengths_that_do_not_fit_the_blocks(tmp_path: Path) -> None:
    bad = {"timestamp": 0, "input_length": 2000, "output_length": 1, "hash_ids": [0, 1]}
    path = _write_jsonl(tmp_path / "m.jsonl", [MOONCAKE[0], bad])
    with pytest.raises(WorkloadFormatError, match=r"m.jsonl:2: input_length 2000"):
        read_mooncake(path)


def test_mooncake_rejects_broken_json_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(MOONCAKE[0]) + "\n{not json\n")
    with pytest.raises(WorkloadFormatError, match=r"m.jsonl:2: not JSON"):
        read_mooncake(path)


def test_azure_csv(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:03.9799600,4808,10\n"
        "2023-11-16 18:17:04.4799600,110,27\n"
    )
    reqs = read_azure_csv(path, name="code")
    assert [r.arrival_time for r in reqs] == pytest.approx([0.0, 0.5])
    assert [(r.prompt_tokens, r.output_tokens) for r in reqs] == [(4808, 10), (110, 27)]
    assert [estimate_tokens(r.prompt_text()) for r in reqs] == [4808, 110]
    assert reqs[0].request_id == "code-0"


def test_azure_csv_errors(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("time,tokens\n1,2\n")
    with pytest.raises(WorkloadFormatError, match="missing columns"):
        read_azure_csv(path)
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2\n")
    with pytest.raises(WorkloadFormatError, match=r"a.csv:2"):
        read_azure_csv(path)


def test_generic_jsonl_prompt_messages_and_lengths(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "g.jsonl",
        [
            {"prompt": "abcdefgh" * 10, "timestamp": 1.5, "output_tokens": 7, "session_id": "s1"},
            {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
            {"prompt_tokens": 300, "max_tokens": 9, "request_id": "mine"},
        ],
    )
    assert not is_mooncake(path)
    a, b, c = read_jsonl(path)
    assert (a.prompt_text(), a.prompt_tokens, a.output_tokens, a.session_id, a.arrival_time) == (
        "abcdefgh" * 10, 20, 7, "s1", 1.5)
    assert b.prompt_text() == "system: be brief\nuser: hi\n" and b.output_tokens == 128 and b.arrival_time == 0.0
    assert (c.request_id, c.prompt_tokens, c.output_tokens) == ("mine", 300, 9)
    assert estimate_tokens(c.prompt_text()) == 300


def test_generic_jsonl_needs_a_prompt(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "g.jsonl", [{"timestamp": 1}])
    with pytest.raises(WorkloadFormatError, match=r"g.jsonl:1: bad record"):
        read_jsonl(path)
    path = _write_jsonl(tmp_path / "g.jsonl", [{"prompt": "x", "timestamp": -1}])
    with pytest.raises(WorkloadFormatError, match="timestamp >= 0"):
        read_jsonl(path)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(WorkloadFormatError, match="no records"):
        read_jsonl(tmp_path / "empty.jsonl")
