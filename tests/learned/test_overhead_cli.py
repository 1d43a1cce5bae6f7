"""`lodestar-vllm bench-overhead` runs end to end on tiny sizes and writes its table and results."""

from __future__ import annotations

import json

import pytest

from lodestar_vllm.cli import main


@pytest.mark.slow
def test_bench_overhead_small(tmp_path, capsys) -> None:
    rc = main(["bench-overhead", "--instances", "4", "--decisions", "50", "--lag-seconds", "0.5",
               "--blocks", "5000", "--ledger-records", "2000", "--warmup", "200", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "decision p50 us" in out and "event-loop lag" in out and "prefix index" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["decision"][0]["instances"] == 4 and results["decision"][0]["decisions"] == 50
    assert results["decision"][0]["model_version"] >= 1  # timed with a trained model, not the fallback
    assert results["memory"]["index_blocks"] == 5000 and results["memory"]["ledger_records"] == 2000
    assert results["lag"]["fits_during_window"] >= 0 and (tmp_path / "overhead.png").exists()


def test_bench_overhead_rejects_bad_sizes() -> None:
    with pytest.raises(SystemExit, match="must be positive"):
        main(["bench-overhead", "--instances", "0"])
