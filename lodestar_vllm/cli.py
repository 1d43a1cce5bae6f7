"""The ``lodestar-vllm`` command: one CLI, subcommands resolved lazily so ``--help`` stays fast.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("lodestar_vllm.bench.demo", "the main job on its embedded default: learned vs heuristics, short"),
    "emulate": ("lodestar_vllm.sim.serve", "run emulated vLLM engine server(s) (OpenAI API + /metrics)"),
    "bench": ("lodestar_vllm.bench.command", "routing benchmark: policies x cluster x workload in virtual time"),
    "bench-engine": ("lodestar_vllm.sim.bench_steps", "engine-model speed: virtual-time steps per second"),
    "bench-overhead": ("lodestar_vllm.bench.overhead", "decision cost of the learned router, event-loop lag"),
    "workload": ("lodestar_vllm.workloads.command", "inspect or export a workload (generators, traces)"),
    "warm-restart": ("lodestar_vllm.bench.warm_restart", "TTFT in the first minute after a restart, cold vs checkpoint"),
    "dashboard": ("lodestar_vllm.bench.dashboard_render", "capture router metrics on loopback, render the Grafana dashboard"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lodestar-vllm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in SUBCOMMANDS:
        if argv and argv[0] not in {"-h", "--help"}:
            parser.error(f"unknown command {argv[0]!r}")
        parser.print_help()
        return 0
    name = argv[0]
    module_name, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    sub_parser = argparse.ArgumentParser(prog=f"lodestar-vllm {name}", description=help_text)
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
