"""Start and stop a real vLLM CPU engine (a subprocess of the vllm venv's python) on 127.0.0.1.

Settings follow real-vllm-cpu.md: pinned to one core with ``taskset``, one OpenMP thread, V1 multiprocessing
off, offline, prefix caching and prompt-token details on, a small ``--kv-cache-memory-bytes`` so KV pressure
is reachable. The python comes from ``LODESTAR_VLLM_PYTHON`` (``make realvllm-env`` builds .venv-vllm).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from lodestar_vllm.realvllm import tiny_model

PYTHON_ENV = "LODESTAR_VLLM_PYTHON"
MIB = 1024**2


def vllm_python() -> str | None:
    return os.environ.get(PYTHON_ENV) or None


def unavailable_reason(python: str | None = None) -> str | None:
    """Why a real engine cannot run here (None when it can)."""
    python = python or vllm_python()
    if python is None:
        return f"{PYTHON_ENV} is unset (build the venv with `make realvllm-env` and point it at .venv-vllm/bin/python)"
    if not Path(python).exists():
        return f"{PYTHON_ENV}={python} does not exist"
    probe = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('vllm') else 3)"
    try:
        result = subprocess.run([python, "-c", probe], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{PYTHON_ENV}={python} cannot run: {exc}"
    if result.returncode != 0:
        return f"{PYTHON_ENV}={python} has no vllm module"
    return None


def cache_root() -> Path:
    return Path(os.environ.get("LODESTAR_VLLM_CACHE", Path(tempfile.gettempdir()) / "lodestar-vllm-cache"))


def build_tiny_model(python: str, cache_dir: Path | None = None) -> Path:
    """The tiny Llama model directory, built once per recipe version with the vllm venv's python (~2 s)."""
    target = (cache_dir or cache_root()) / f"tiny-llama-v{tiny_model.RECIPE_VERSION}"
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="tiny-llama-", dir=target.parent))
    try:
        subprocess.run([python, tiny_model.__file__, "--out", str(staging)], check=True, capture_output=True,
                       timeout=300)
        try:
            staging.rename(target)  # atomic: a concurrent builder may have won, which is fine
        except OSError:
            if not (target / "model.safetensors").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class RealEngineOptions:
    port: int
    core: int | None = None  # CPU core to pin to (taskset); None: no pinning
    served_model_name: str = "tiny"
    max_model_len: int = 2048
    max_num_seqs: int = 8
    max_num_batched_tokens: int = 2048
    block_size: int = 128
    kv_cache_memory_bytes: int = 16 * MIB
    extra_args: tuple[str, ...] = field(default_factory=tuple)


def engine_command(python: str, model_dir: Path, o: RealEngineOptions) -> list[str]:
    cmd = [
        python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--served-model-name", o.served_model_name, "--host", "127.0.0.1", "--port", str(o.port),
        "--max-model-len", str(o.max_model_len), "--enable-prefix-caching", "--dtype", "bfloat16",
        "--max-num-seqs", str(o.max_num_seqs), "--max-num-batched-tokens", str(o.max_num_batched_tokens),
        "--enforce-eager", "--kv-cache-memory-bytes", str(o.kv_cache_memory_bytes),
        "--enable-prompt-tokens-details", "--block-size", str(o.block_size), *o.extra_args,
    ]
    if o.core is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(o.core), *cmd]
    return cmd


def engine_env(o: RealEngineOptions) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_KVCACHE_SPACE"}  # it overrides the byte flag
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        OMP_NUM_THREADS="1",
        VLLM_ENABLE_V1_MULTIPROCESSING="0",
    )
    if o.core is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = str(o.core)
    return env


class RealEngine:
    """One real vLLM engine process; use as a context manager or call start/wait_ready/stop."""

    def __init__(self, python: str, model_dir: Path, options: RealEngineOptions, log_path: Path) -> None:
        self.python = python
        self.model_dir = model_dir
        self.options = options
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.options.port}"

    def start(self) -> None:
        self._log = open(self.log_path, "wb")  # closed in stop()
        self.process = subprocess.Popen(
            engine_command(self.python, self.model_dir, self.options),
            env=engine_env(self.options),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"real vLLM exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"real vLLM not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> RealEngine:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmulatorProcess:
    """``lodestar-vllm emulate`` for the cpu/tiny profile in its own process, configured like the real engine
    (same block size, KV blocks, seats and token budget), optionally pinned to a core."""

    def __init__(self, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.process = proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_emulator(
    port: int,
    num_gpu_blocks: int,
    core: int | None = None,
    step_coefficients: dict[str, float] | None = None,
    options: RealEngineOptions | None = None,
    timeout_s: float = 30.0,
    ingest: tuple[float, float] | None = None,
    time_scale: float = 1.0,
) -> EmulatorProcess:
    o = options or RealEngineOptions(port=port)
    cmd = [
        sys.executable, "-m", "lodestar_vllm.cli", "emulate", "--gpu", "cpu", "--model", "tiny",
        "--served-model-name", o.served_model_name, "--port", str(port), "--num-gpu-blocks", str(num_gpu_blocks),
        "--block-size", str(o.block_size), "--max-num-seqs", str(o.max_num_seqs),
        "--max-num-batched-tokens", str(o.max_num_batched_tokens), "--max-model-len", str(o.max_model_len),
    ]
    for name, value in (step_coefficients or {}).items():
        cmd += ["--step-coefficient", f"{name}={value!r}"]
    if ingest is not None:
        cmd += ["--ingest-fixed-s", repr(ingest[0]), "--ingest-per-token-s", repr(ingest[1])]
    if time_scale != 1.0:
        cmd += ["--time-scale", repr(time_scale)]
    if core is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(core), *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    emulator = EmulatorProcess(port, proc)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{emulator.url}/health", timeout=1).status_code == 200:
                return emulator
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    emulator.stop()
    raise RuntimeError(f"emulator did not start on port {port} (exit code {proc.returncode})")
