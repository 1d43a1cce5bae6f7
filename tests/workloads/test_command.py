"""The `lodestar-vllm workload` subcommand: list, statistics, export that reads back."""

import json
from pathlib import Path

import pytest

from lodestar_vllm.cli import main
from lodestar_vllm.workloads import load_workload


def test_lists_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workload"]) == 0
    out = capsys.readouterr().out
    assert "prefix-sharing" in out and "mooncake-like" in out and "azure-conv" in out


def test_statistics_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workload", "prefix-sharing-30", "--max-requests", "200", "--block-size", "16", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)["prefix-sharing-30"]
    assert stats["requests"] == 200 and 0.2 < stats["prefix_hit_ratio"] <= 0.3


def test_statistics_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workload", "multi-round-qa", "--duration", "60", "--no-sharing"]) == 0
    out = capsys.readouterr().out
    assert "| requests |" in out and "| prefix_hit_ratio | n/a |" in out


def test_compares_workloads_in_one_table_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "cmp.png"
    argv = ["workload", "prefix-sharing-0", "prefix-sharing-70", "--max-requests", "100", "--plot", str(plot)]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "| statistic | prefix-sharing-0 | prefix-sharing-70 |" in lines
    hits = next(line for line in lines if line.startswith("| prefix_hit_ratio |")).split("|")[2:4]
    assert float(hits[0]) == 0.0 and float(hits[1]) > 0.5
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_takes_one_workload(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workload", "prefix-sharing", "multi-round-qa", "--export", "-"]) == 2
    assert "exactly one" in capsys.readouterr().err


def test_export_reads_back_with_its_text(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    assert main(["workload", "prefix-sharing", "--max-requests", "30", "--export", str(path), "--text"]) == 0
    original = load_workload("prefix-sharing", max_requests=30)
    back = load_workload(str(path))
    assert [(r.request_id, r.prompt_tokens, r.output_tokens) for r in back] == [
        (r.request_id, r.prompt_tokens, r.output_tokens) for r in original]
    assert [r.prompt_text() for r in back] == [r.prompt_text() for r in original]
    assert [r.arrival_time for r in back] == [r.arrival_time for r in original]


def test_bad_workload_exits_nonzero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workload", "nope"]) == 2
    assert "unknown workload" in capsys.readouterr().err
