"""`lodestar-vllm emulate`: planning from flags / a cluster file, and several engines in one process."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lodestar_vllm.sim import serve


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    return parser.parse_args(list(argv))


def free_ports(n: int) -> list[int]:
    """n consecutive free loopback ports (the cluster mode binds base..base+n-1)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        socks = []
        try:
            for p in range(base, base + n):
                t = socket.socket()
                t.bind(("127.0.0.1", p))
                socks.append(t)
            return list(range(base, base + n))
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no free consecutive ports")


def test_single_engine_plan_applies_overrides() -> None:
    args = parse("--gpu", "A100-80GB", "--port", "9001", "--max-num-seqs", "64", "--block-size", "32")
    [inst] = serve.plan_instances(args)
    assert (inst.gpu, inst.model, inst.port) == ("A100-80GB", "llama-3.1-8b", 9001)
    assert inst.config.max_num_seqs == 64 and inst.config.block_size == 32
    assert inst.config.max_num_batched_tokens == 2048  # vLLM's A100 default


def test_cluster_plan_uses_consecutive_ports(tmp_path: Path) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text("model: llama-3.1-8b\ninstances:\n  - {gpu: A100-80GB, count: 2}\n  - {gpu: L4}\n")
    instances = serve.plan_instances(parse("--cluster", str(spec), "--base-port", "9100", "--num-gpu-blocks", "99"))
    assert [(i.name, i.port) for i in instances] == [("a100-80gb-0", 9100), ("a100-80gb-1", 9101), ("l4-0", 9102)]
    assert all(i.config.num_gpu_blocks == 99 for i in instances)


def test_unknown_gpu_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve.run(parse("--gpu", "TPU-9000")) == 2
    assert "unknown GPU" in capsys.readouterr().err


@pytest.mark.slow
def test_cluster_process_serves_each_engine_on_its_port(tmp_path: Path) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text("model: tiny\ninstances:\n  - {gpu: cpu, count: 2, block_size: 128, max_model_len: 2048}\n")
    ports = free_ports(2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lodestar_vllm.cli", "emulate", "--cluster", str(spec), "--base-port", str(ports[0])],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        healthy: set[int] = set()
        while time.monotonic() < deadline and len(healthy) < 2 and proc.poll() is None:
            for port in ports:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        healthy.add(port)
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        assert healthy == set(ports), "emulated engines did not come up"
        r = httpx.post(f"http://127.0.0.1:{ports[1]}/v1/completions", json={"prompt": "hi " * 50, "max_tokens": 2})
        assert r.status_code == 200 and r.json()["model"] == "tiny"
        metrics = httpx.get(f"http://127.0.0.1:{ports[1]}/metrics").text
        assert 'engine="1"' in metrics
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, out
        for port in ports:
            assert f"http://127.0.0.1:{port} -> cpu-" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
