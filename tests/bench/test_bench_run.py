"""The benchmark layer on tiny runs: presets, scenario errors, results.json schema, report and plots, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lodestar_vllm.bench.command import run_benchmark
from lodestar_vllm.bench.presets import ADAPTATION, CLUSTER_YAML, cluster_names, load_cluster
from lodestar_vllm.bench.report import write_report
from lodestar_vllm.bench.results import POLICY_KEYS, load_results, write_results
from lodestar_vllm.bench.runner import is_heuristic
from lodestar_vllm.bench.scenario import Scenario, ScenarioError
from lodestar_vllm.policies.registry import register
from tests.bench.fakes import fake_factory

register("test-roundrobin", "tests.bench.fakes:RoundRobin")
register("test-random", "tests.bench.fakes:Recording")
TINY = Scenario(cluster="tiny", workload="prefix-sharing", seed=3, max_requests=40, rate_scale=4.0)


def test_every_preset_loads() -> None:
    assert set(cluster_names()) == set(CLUSTER_YAML) | set(ADAPTATION)
    sizes = {name: len(load_cluster(name).spec.instances) for name in cluster_names()}
    assert sizes["paper-homogeneous"] == sizes["paper-heterogeneous"] == sizes["mixed-fleet"] == 8
    assert sizes["large"] == 32
    hetero = load_cluster("paper-heterogeneous").spec
    assert [i.gpu for i in hetero.instances] == ["A30"] * 4 + ["V100"] * 4
    h100 = [i for i in load_cluster("mixed-fleet").spec.instances if i.gpu == "H100"]
    assert len(h100) == 2 and h100[0].engine.max_num_batched_tokens == 8192


def test_adaptation_preset_slows_half_the_fleet_at_mid_run() -> None:
    (event,) = load_cluster("paper-heterogeneous-slowdown").events(span_s=600.0)
    assert event.at == 300.0 and event.action == "slowdown" and event.factor == 2.0
    assert event.instances == ("a30-0", "a30-1", "a30-2", "a30-3")


def test_cluster_file_and_bad_names(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model: llama-3.1-8b\ninstances:\n  - {gpu: L4, count: 3}\n", encoding="utf-8")
    choice = load_cluster(str(path))
    assert choice.name == "c" and len(choice.spec.instances) == 3
    with pytest.raises(ValueError, match="unknown cluster 'nope'.*paper-homogeneous"):
        load_cluster("nope")
    with pytest.raises(ValueError, match="not found"):
        load_cluster(str(tmp_path / "missing.yaml"))


def test_missing_trace_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LODESTAR_SHARED", str(tmp_path / "no-shared-here"))
    with pytest.raises(ScenarioError, match="mooncake-conversation.*absent.*LODESTAR_SHARED"):
        Scenario(cluster="tiny", workload="mooncake-conversation").load_requests()
    with pytest.raises(ScenarioError, match="unknown workload"):
        Scenario(cluster="tiny", workload="no-such-workload").load_requests()


def test_results_schema_report_and_plots(tmp_path: Path) -> None:
    policies = ["test-roundrobin", "test-random", "oracle-greedy"]
    doc = run_benchmark(TINY, policies, jobs=1, progress=False, engine_factory=fake_factory)
    write_results(tmp_path / "results.json", doc)
    loaded = load_results(tmp_path / "results.json")
    assert loaded["scenario"]["cluster"] == "tiny" and loaded["scenario"]["rate_scale"] == 4.0
    assert loaded["scenario"]["instances"] == ["a100-40gb-0 (A100-40GB)", "l4-0 (L4)"]
    assert loaded["scenario"]["fleet_changes"] == []
    assert list(loaded["policies"]) == policies
    for name, res in loaded["policies"].items():
        assert set(POLICY_KEYS) <= set(res), name
        assert res["requests"] == 40 and res["completed"] + res["failed"] == 40
        assert 0 < res["ttft_p50_s"] <= res["ttft_p90_s"] <= res["ttft_p99_s"]
        assert res["e2e_mean_s"] > res["ttft_mean_s"]
        assert sum(res["per_instance_share"].values()) == pytest.approx(1.0)
        assert res["timeline"] and all({"t_s", "ttft_mean_s", "ttft_p99_s"} <= set(w) for w in res["timeline"])
        assert res["wall_s"] >= 0 and res["virtual_s"] > 0
    assert loaded["policies"]["test-roundrobin"]["per_instance_share"] == {"a100-40gb-0": 0.5, "l4-0": 0.5}
    report = write_report(tmp_path, loaded)
    text = report.read_text(encoding="utf-8")
    assert "| test-roundrobin |" in text and "best heuristic" in text and "**" in text
    for png in ("ttft_cdf.png", "ttft_over_time.png", "load_share.png"):
        assert (tmp_path / png).stat().st_size > 1000
        assert png in text


def test_same_seed_same_numbers() -> None:
    a = run_benchmark(TINY, ["test-random"], jobs=1, progress=False, engine_factory=fake_factory)
    b = run_benchmark(TINY, ["test-random"], jobs=1, progress=False, engine_factory=fake_factory)
    strip = ("wall_s", "cpu_s")
    assert {k: v for k, v in a["policies"]["test-random"].items() if k not in strip} == {
        k: v for k, v in b["policies"]["test-random"].items() if k not in strip
    }


def test_sweep_writes_points_and_the_load_plot(tmp_path: Path) -> None:
    doc = run_benchmark(TINY, ["test-roundrobin"], jobs=1, progress=False, sweep="rate-scale=1,8",
                        engine_factory=fake_factory)
    points = doc["sweep"]["points"]
    assert [p["value"] for p in points] == [1.0, 8.0]
    assert doc["policies"] == points[0]["policies"]
    low, high = (p["policies"]["test-roundrobin"]["ttft_mean_s"] for p in points)
    assert high > low  # 8x the arrival rate on the same fleet queues more
    write_report(tmp_path, json.loads(json.dumps(doc)))
    assert (tmp_path / "ttft_vs_load.png").exists()


def test_bad_input_is_refused_before_running() -> None:
    with pytest.raises(ScenarioError, match="unknown policy"):
        run_benchmark(TINY, ["no-such-policy"], jobs=1, progress=False)
    with pytest.raises(ScenarioError, match="--sweep"):
        run_benchmark(TINY, ["test-roundrobin"], jobs=1, progress=False, sweep="colour=1,2")
    with pytest.raises(ScenarioError, match="unknown cluster"):
        run_benchmark(TINY.with_(cluster="nope"), ["test-roundrobin"], jobs=1, progress=False)


def test_heuristic_classification() -> None:
    assert is_heuristic("aibrix-prefix-load") and is_heuristic("roundrobin")
    assert not is_heuristic("learned") and not is_heuristic("learned-shadow") and not is_heuristic("oracle-greedy")


def test_cli_error_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lodestar_vllm.cli import main

    rc = main(["bench", "--cluster", "nope", "--workload", "prefix-sharing", "--policies", "test-roundrobin",
               "--out", str(tmp_path)])
    assert rc == 2 and "unknown cluster" in capsys.readouterr().err


def test_target_load_brackets_the_factor() -> None:
    from lodestar_vllm.bench.target_load import find_target_load

    lines: list[str] = []
    scenario = TINY.with_(max_requests=None, duration=20.0, rate_scale=1.0)
    rate, idle, points = find_target_load(scenario, ["test-roundrobin"], factor=3.0, jobs=1, refine_steps=2,
                                          log=lines.append, engine_factory=fake_factory)
    assert idle > 0 and points and lines[0].startswith("idle TTFT")
    by_rate = {p.rate_scale: p.ratio_to_idle for p in points}
    assert by_rate[rate] >= 3.0
    below = [r for r in by_rate if r < rate]
    assert below and by_rate[max(below)] < 3.0  # the next lower rate tried misses the target


def test_cli_bench_and_demo_write_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lodestar_vllm.cli import main

    rc = main(["bench", "--cluster", "tiny", "--workload", "prefix-sharing", "--max-requests", "20",
               "--policies", "roundrobin,oracle-greedy", "--jobs", "1", "--no-progress", "--out", str(tmp_path / "b")])
    assert rc == 0
    doc = load_results(tmp_path / "b" / "results.json")
    assert list(doc["policies"]) == ["roundrobin", "oracle-greedy"] and doc["policies"]["roundrobin"]["completed"] == 20
    assert "| oracle-greedy |" in capsys.readouterr().out
    rc = main(["demo", "--duration", "3", "--policies", "least-request,oracle-greedy", "--jobs", "1",
               "--no-progress", "--out", str(tmp_path / "demo")])
    assert rc == 0
    demo = load_results(tmp_path / "demo" / "results.json")
    assert demo["scenario"]["cluster"] == "mixed-fleet" and demo["scenario"]["duration"] == 3.0
    assert (tmp_path / "demo" / "report.md").exists()


def test_every_preset_builds_calibrated_engines() -> None:
    from lodestar_vllm.sim.cluster import default_engine_factory

    for name in cluster_names():
        for inst in load_cluster(name).spec.instances:
            engine, hardware = default_engine_factory(inst)
            assert engine.stats().num_gpu_blocks > 0, (name, inst.name)
            assert hardware.gpu_class and hardware.gpu_memory_gb and hardware.gpu_memory_gb > 10


def test_scale_out_preset_adds_an_engine_like_the_first() -> None:
    (event,) = load_cluster("mixed-fleet-scale-out").events(span_s=90.0)
    assert event.action == "add" and event.at == pytest.approx(30.0)
    assert event.new_instance is not None and event.new_instance.gpu == "H100"
    assert event.new_instance.name == "h100-added-0" and event.new_instance.engine.max_num_batched_tokens == 8192
