"""Engine stats -> ``EngineMetrics`` exactly as a Prometheus scrape of the engine's ``/metrics`` would show them.

The router under test must see what production shows: gauges and cumulative counters at a scrape instant, never
the engine's queues. Kept separate from the simulator so the emulated server can export the same figures.
"""

from __future__ import annotations

from lodestar_vllm.core.types import EngineMetrics
from lodestar_vllm.sim.engine import EngineStats


def scrape_metrics(stats: EngineStats, now: float) -> EngineMetrics:
    """One scrape at ``now``: gauges as floats (Prometheus has no ints), cache config as ints (info labels)."""
    return EngineMetrics(
        scraped_at=now,
        num_running=float(stats.num_running),
        num_waiting=float(stats.num_waiting),
        kv_cache_usage=min(1.0, max(0.0, float(stats.kv_cache_usage))),
        num_preemptions_total=float(stats.num_preemptions_total),
        prefix_cache_queries_total=float(stats.prefix_cache_queries_total),
        prefix_cache_hits_total=float(stats.prefix_cache_hits_total),
        prompt_tokens_total=float(stats.prompt_tokens_total),
        generation_tokens_total=float(stats.generation_tokens_total),
        num_gpu_blocks=int(stats.num_gpu_blocks),
        block_size=int(stats.block_size),
    )
