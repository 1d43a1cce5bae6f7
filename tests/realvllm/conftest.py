"""One real vLLM engine and one emulator (cpu/tiny, same KV capacity) per test session.

Both run as subprocesses on 127.0.0.1, pinned to different cores when there are two, so that they see the
same kind of machine. Skips (reason printed with -ra) when LODESTAR_VLLM_PYTHON is unset or lacks vllm.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from lodestar_vllm.realvllm import launcher
from lodestar_vllm.realvllm.probe import cache_config


@dataclass(frozen=True)
class Pair:
    real: str  # base URLs
    emulator: str
    real_pid: int
    num_gpu_blocks: int
    options: launcher.RealEngineOptions


def _cores() -> tuple[int | None, int | None]:
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(usable) >= 2:
        return usable[1], usable[0]  # real engine, emulator
    return None, None


@pytest.fixture(scope="session")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    reason = launcher.unavailable_reason()
    if reason:
        pytest.skip(f"real vLLM unavailable: {reason}")
    python = launcher.vllm_python()
    assert python is not None
    model = launcher.build_tiny_model(python)
    real_core, emulator_core = _cores()
    options = launcher.RealEngineOptions(port=launcher.free_port(), core=real_core)
    log = tmp_path_factory.mktemp("realvllm") / "real-vllm.log"
    real = launcher.RealEngine(python, model, options, log)
    real.start()
    emulator: launcher.EmulatorProcess | None = None
    try:
        real.wait_ready(timeout_s=240)

        async def blocks() -> int:
            async with httpx.AsyncClient(timeout=10) as client:
                return int((await cache_config(client, real.url))["num_gpu_blocks"])

        num_blocks = asyncio.run(blocks())
        emulator = launcher.start_emulator(launcher.free_port(), num_blocks, emulator_core, options=options)
        assert real.process is not None
        yield Pair(real.url, emulator.url, real.process.pid, num_blocks, options)
    finally:
        if emulator is not None:
            emulator.stop()
        real.stop()
