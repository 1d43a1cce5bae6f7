"""``lodestar-vllm emulate``: emulated vLLM engine server(s), one uvicorn server per port in one event loop.

    lodestar-vllm emulate --gpu A100-80GB --model llama-3.1-8b --port 8001
    lodestar-vllm emulate --cluster cluster.yaml --base-port 8100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from lodestar_vllm.sim.cluster_spec import ClusterSpec, EngineConfig
from lodestar_vllm.sim.profiles import StepCoefficients, default_engine_config, get_profile, with_step
from lodestar_vllm.sim.server import build_server, create_app, default_ingest

# CLI flag -> EngineConfig field (the same names as `vllm serve` flags)
ENGINE_OVERRIDES = ("block_size", "num_gpu_blocks", "max_num_seqs", "max_num_batched_tokens", "max_model_len")


@dataclass(frozen=True, slots=True)
class EmulatedInstance:
    name: str
    gpu: str
    model: str
    tensor_parallel: int
    config: EngineConfig
    port: int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--gpu", help="one engine on this GPU (e.g. A100-80GB, H100, L4, cpu)")
    what.add_argument("--cluster", help="cluster YAML: one engine per instance, on consecutive ports")
    parser.add_argument("--model", default="llama-3.1-8b", help="model of the single engine (default %(default)s)")
    parser.add_argument("--tensor-parallel", type=int, default=1, help="GPUs per engine (single engine)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    parser.add_argument("--port", type=int, default=8001, help="port of the single engine")
    parser.add_argument("--base-port", type=int, default=8100, help="first port of a --cluster")
    parser.add_argument("--served-model-name", help="model name in the API (default: the model)")
    parser.add_argument("--block-size", type=int)
    parser.add_argument("--num-gpu-blocks", type=int, help="KV capacity in blocks (overrides the memory model)")
    parser.add_argument("--max-num-seqs", type=int)
    parser.add_argument("--max-num-batched-tokens", type=int)
    parser.add_argument("--max-model-len", type=int)
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="run the emulated hardware this many times faster than wall time (default 1)")
    parser.add_argument("--step-coefficient", action="append", default=[], metavar="NAME=SECONDS",
                        help="override one step-time coefficient of the profile (calibration experiments), "
                             "e.g. overhead_s=0.002; repeatable")
    parser.add_argument("--ingest-fixed-s", type=float,
                        help="API-server cost per request, seconds (default: the GPU's, 0 on GPUs)")
    parser.add_argument("--ingest-per-token-s", type=float,
                        help="API-server cost per prompt token, seconds (default: the GPU's, 0 on GPUs)")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (default %(default)s)")


def step_overrides(items: list[str]) -> dict[str, float]:
    known = {f.name for f in dataclasses.fields(StepCoefficients)}
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in known:
            raise ValueError(f"--step-coefficient {item!r}: expected NAME=SECONDS with NAME in {sorted(known)}")
        out[name] = float(value)
    return out


def plan_instances(args: argparse.Namespace) -> list[EmulatedInstance]:
    overrides = {k: getattr(args, k) for k in ENGINE_OVERRIDES if getattr(args, k, None) is not None}
    if args.cluster:
        spec = ClusterSpec.from_yaml(args.cluster)
        return [
            EmulatedInstance(i.name, i.gpu, i.model, i.tensor_parallel, dataclasses.replace(i.engine, **overrides),
                             args.base_port + n)
            for n, i in enumerate(spec.instances)
        ]
    config = default_engine_config(args.gpu, **overrides)
    name = f"{args.gpu.lower()}-0"
    return [EmulatedInstance(name, args.gpu, args.model, args.tensor_parallel, config, args.port)]


class SharedLoopServer(uvicorn.Server):
    """Several servers share one loop: signals are handled once, by ``serve_all``, not by each server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_all(instances: list[EmulatedInstance], args: argparse.Namespace) -> None:
    servers: list[SharedLoopServer] = []
    for index, inst in enumerate(instances):
        profile = get_profile(inst.gpu, inst.model, inst.tensor_parallel)
        overrides = step_overrides(args.step_coefficient)
        if overrides:
            profile = with_step(profile, **overrides)
        ingest = default_ingest(profile)
        if args.ingest_fixed_s is not None:
            ingest = dataclasses.replace(ingest, fixed_s=args.ingest_fixed_s)
        if args.ingest_per_token_s is not None:
            ingest = dataclasses.replace(ingest, per_prompt_token_s=args.ingest_per_token_s)
        served = build_server(
            profile,
            inst.config,
            served_model_name=args.served_model_name or inst.model,
            time_scale=args.time_scale,
            engine_index=0 if len(instances) == 1 else index,
            ingest=ingest,
        )
        app = create_app(served)
        stats = served.engine.stats()
        url = f"http://{args.host}:{inst.port}"
        print(f"{url} -> {inst.name} gpu={inst.gpu} model={inst.model} tp={inst.tensor_parallel} "
              f"kv_blocks={stats.num_gpu_blocks}x{stats.block_size}", flush=True)
        config = uvicorn.Config(app, host=args.host, port=inst.port, log_level=args.log_level, lifespan="on")
        servers.append(SharedLoopServer(config))

    loop = asyncio.get_running_loop()

    def stop() -> None:
        for s in servers:
            s.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop)
    await asyncio.gather(*(s.serve() for s in servers))


def run(args: argparse.Namespace) -> int:
    try:
        instances = plan_instances(args)
        step_overrides(args.step_coefficient)
        for inst in instances:  # fail before binding anything
            get_profile(inst.gpu, inst.model, inst.tensor_parallel)
    except (ValueError, OSError, KeyError) as exc:
        print(f"emulate: {exc}", file=sys.stderr)
        return 2
    if args.time_scale <= 0:
        print("emulate: --time-scale must be > 0", file=sys.stderr)
        return 2
    asyncio.run(serve_all(instances, args))
    return 0
