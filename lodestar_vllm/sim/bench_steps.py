"""``lodestar-vllm bench-engine``: how many virtual-time engine steps per second the engine model runs.

The load is a steady batch, as a busy engine in a cluster run sees it: ``--running`` requests in flight from
the start (remaining outputs spread so that they finish at different steps), and Poisson arrivals per step
that replace them (prompts uniform in ``--prompt-range``, default 200-2000 tokens, a third sharing a 512-token
system prompt; outputs averaging ``--mean-output``). Each point times ``--steps`` steps of one engine (the
requests are built beforehand) and reports wall-clock and CPU steps/s plus what the engine did (mean batch,
tokens per step, preemptions, prefix hits).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from dataclasses import dataclass

from lodestar_vllm.sim.engine import EngineCore, EngineRequest
from lodestar_vllm.sim.profiles import default_engine_config, get_profile


@dataclass(slots=True)
class BenchPoint:
    running: int
    steps: int
    wall_s: float
    cpu_s: float  # process CPU time: what the engine costs on a machine shared with other work
    mean_running: float
    mean_tokens: float
    virtual_s: float
    generated: int
    preemptions: int
    hit_rate: float

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.wall_s

    @property
    def steps_per_cpu_s(self) -> float:
        return self.steps / self.cpu_s


def _request(rng: random.Random, i: int, at: float, mean_output: int, block_size: int,
             prompt_range: tuple[int, int], output: int | None = None) -> EngineRequest:
    prompt_len = rng.randint(*prompt_range)
    n_blocks = prompt_len // block_size
    shared = min(n_blocks, 512 // block_size) if rng.random() < 0.33 else 0
    hashes = [hash(("system", b)) for b in range(shared)]
    hashes += [hash((i, b)) for b in range(shared, n_blocks)]
    if output is None:
        output = max(1, int(rng.expovariate(1.0 / mean_output)))
    return EngineRequest(f"b{i}", prompt_len, output, hashes, at)


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: fine for the small means used here."""
    limit = math.exp(-mean)
    k = 0
    p = rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def run_point(gpu: str, model: str, running: int, steps: int, mean_output: int, seed: int,
              prompt_range: tuple[int, int] = (200, 2000)) -> BenchPoint:
    config = default_engine_config(gpu, max_num_seqs=max(running + 64, 256))
    engine = EngineCore(get_profile(gpu, model), config)
    rng = random.Random(seed)
    bs = config.block_size
    for i in range(running):
        output = rng.randint(1, 2 * mean_output)
        engine.add_request(_request(rng, i, 0.0, mean_output, bs, prompt_range, output=output))
    # Warm up to the steady batch (prefills done) before timing.
    now = 0.0
    while engine.scheduler.waiting or engine.scheduler.prefiller is not None:
        now += engine.step(now).duration
    # Arrivals are drawn per step (mean running / mean output), so the batch stays near ``running`` whatever
    # the step times; requests are built before the timed loop so that only the engine is measured.
    per_step = running / mean_output
    counts = [_poisson(rng, per_step) for _ in range(steps)]
    fresh = [_request(rng, running + k, 0.0, mean_output, bs, prompt_range) for k in range(sum(counts))]
    total_running = total_tokens = 0
    start_stats = engine.stats()
    start_virtual = now
    add = engine.add_request
    step = engine.step
    sched = engine.scheduler
    k = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    for n_new in counts:
        for _ in range(n_new):
            req = fresh[k]
            req.arrival_time = now
            add(req)
            k += 1
        result = step(now)
        total_tokens += result.scheduled_tokens
        total_running += len(sched.running)
        now += result.duration
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    stats = engine.stats()
    queries = stats.prefix_cache_queries_total - start_stats.prefix_cache_queries_total
    hits = stats.prefix_cache_hits_total - start_stats.prefix_cache_hits_total
    return BenchPoint(
        running=running,
        steps=steps,
        wall_s=wall,
        cpu_s=cpu,
        mean_running=total_running / steps,
        mean_tokens=total_tokens / steps,
        virtual_s=now - start_virtual,
        generated=stats.generation_tokens_total - start_stats.generation_tokens_total,
        preemptions=stats.num_preemptions_total - start_stats.num_preemptions_total,
        hit_rate=hits / queries if queries else 0.0,
    )


def format_table(points: list[BenchPoint]) -> str:
    head = ("| running (target) | steps | steps/s (wall) | steps/s (CPU) | mean running | tokens/step | virtual s |"
            " gen tok/s (virtual) | preemptions | prefix hit rate |")
    lines = [head, "|" + "---|" * 10]
    for p in points:
        lines.append(
            f"| {p.running} | {p.steps} | {p.steps_per_s:,.0f} | {p.steps_per_cpu_s:,.0f} | {p.mean_running:.1f} | "
            f"{p.mean_tokens:.1f} | "
            f"{p.virtual_s:.1f} | {p.generated / p.virtual_s:,.0f} | {p.preemptions} | {p.hit_rate:.2f} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpu", default="H100", help="GPU profile (default H100)")
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--running", type=int, nargs="+", default=[200],
                        help="requests kept in flight, one point each (default 200)")
    parser.add_argument("--steps", type=int, default=50_000, help="timed steps per point")
    parser.add_argument("--mean-output", type=int, default=300, help="mean output tokens of arrivals")
    parser.add_argument("--prompt-range", type=int, nargs=2, default=[200, 2000], metavar=("MIN", "MAX"),
                        help="prompt lengths, uniform (default 200 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=None, help="write steps/s per point to this PNG")


def run(args: argparse.Namespace) -> int:
    if args.steps < 1 or any(r < 1 for r in args.running):
        raise SystemExit("--steps and --running must be >= 1")
    low, high = args.prompt_range
    if not 1 <= low <= high:
        raise SystemExit("--prompt-range needs 1 <= MIN <= MAX")
    points = []
    for n in args.running:
        print(f"bench-engine: {args.gpu}/{args.model}, {n} running, {args.steps} steps ...", flush=True)
        point = run_point(args.gpu, args.model, n, args.steps, args.mean_output, args.seed, (low, high))
        print(f"  {point.steps_per_s:,.0f} steps/s wall, {point.steps_per_cpu_s:,.0f} per CPU second", flush=True)
        points.append(point)
    print(format_table(points))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2))
        xs = [p.mean_running for p in points]
        ax.plot(xs, [p.steps_per_s for p in points], marker="o", label="wall clock")
        ax.plot(xs, [p.steps_per_cpu_s for p in points], marker="s", label="per CPU second")
        ax.legend()
        ax.set_xlabel("mean running requests")
        ax.set_ylabel("engine steps / s")
        ax.set_title(f"engine model speed, {args.gpu}/{args.model}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")
    return 0
