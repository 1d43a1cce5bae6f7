"""``bench-engine`` runs a bounded, steady load and reports what the engine did (no timing asserted)."""

from __future__ import annotations

import argparse

from lodestar_vllm.sim.bench_steps import add_arguments, format_table, run, run_point


def test_bench_point_keeps_the_batch_near_its_target() -> None:
    point = run_point("H100", "llama-3.1-8b", running=64, steps=1500, mean_output=200, seed=1)
    assert point.steps == 1500
    assert 40 < point.mean_running < 90
    assert point.mean_tokens > point.mean_running  # decodes plus the arrivals' prefills
    assert point.generated > 0 and point.virtual_s > 0 and point.wall_s > 0
    assert "| 64 | 1500 |" in format_table([point])


def test_bench_command_prints_a_table_and_writes_a_plot(tmp_path, capsys) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    plot = tmp_path / "speed.png"
    args = parser.parse_args(["--running", "16", "32", "--steps", "300", "--plot", str(plot)])
    assert run(args) == 0
    out = capsys.readouterr().out
    assert "steps/s (CPU)" in out and out.count("\n| ") >= 3
    assert plot.stat().st_size > 1000
