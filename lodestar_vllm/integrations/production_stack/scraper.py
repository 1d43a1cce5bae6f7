"""Our own scrape of each engine's ``/metrics``, reading vLLM's CURRENT metric names (old ones as fallback).

The host's scraper reads only the removed names (``vllm:gpu_cache_usage_perc``, ``vllm:gpu_prefix_cache_*``), so
against today's engines it reports zero KV usage and zero prefix hits; and it scrapes sequentially in a thread.
This one runs on the event loop with httpx, all engines concurrently, each bounded by a timeout, and only
swaps a finished snapshot in, so the request path reads a dict and never waits on the network.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lodestar_vllm.core.types import EngineMetrics

logger = logging.getLogger(__name__)

# EngineMetrics field -> sample names, current first. Counters appear with their `_total` suffix in samples.
_SAMPLES: dict[str, tuple[str, ...]] = {
    "num_running": ("vllm:num_requests_running",),
    "num_waiting": ("vllm:num_requests_waiting",),
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "num_preemptions_total": ("vllm:num_preemptions_total",),
    "prefix_cache_queries_total": ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
    "prefix_cache_hits_total": ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
    "prompt_tokens_total": ("vllm:prompt_tokens_total",),
    "generation_tokens_total": ("vllm:generation_tokens_total",),
}
_CACHE_CONFIG = "vllm:cache_config_info"


def parse_vllm_metrics(text: str, scraped_at: float) -> EngineMetrics:
    """One engine's exposition text -> EngineMetrics. Samples of one name are summed over label sets (an engine
    serving several model names exports one series each). Raises ValueError on text that is not exposition."""
    sums: dict[str, float] = {}
    cache_labels: Mapping[str, str] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == _CACHE_CONFIG or (family.name == _CACHE_CONFIG and sample.name.endswith("_info")):
                cache_labels = sample.labels
            else:
                sums[sample.name] = sums.get(sample.name, 0.0) + float(sample.value)
    values: dict[str, float] = {}
    for field_name, names in _SAMPLES.items():
        for name in names:
            if name in sums:
                values[field_name] = sums[name]
                break
    if "kv_cache_usage" in values:
        values["kv_cache_usage"] = min(1.0, max(0.0, values["kv_cache_usage"]))
    return EngineMetrics(
        scraped_at=scraped_at,
        num_gpu_blocks=_int_label(cache_labels, "num_gpu_blocks"),
        block_size=_int_label(cache_labels, "block_size"),
        **values,
    )


def _int_label(labels: Mapping[str, str], key: str) -> int | None:
    try:
        return int(float(labels[key]))
    except (KeyError, ValueError, TypeError):
        return None


class MetricsScraper:
    """Keeps the latest EngineMetrics per engine URL. ``urls`` is asked each round which engines exist."""

    def __init__(
        self,
        urls: Callable[[], Iterable[str]],
        interval: float = 1.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._urls = urls
        self.interval = interval
        self.timeout = timeout
        self._clock = clock
        self._transport = transport
        self._latest: dict[str, EngineMetrics] = {}
        self.errors: dict[str, str] = {}
        self.rounds = 0
        self._task: asyncio.Task[None] | None = None

    def latest(self) -> Mapping[str, EngineMetrics]:
        """The last successful scrape per URL (a snapshot; safe to read on the request path)."""
        return self._latest

    async def scrape_once(self) -> None:
        urls = sorted({url.rstrip("/") for url in self._urls()})
        async with httpx.AsyncClient(timeout=self.timeout, transport=self._transport) as client:
            results = await asyncio.gather(*(self._scrape(client, url) for url in urls))
        latest = {url: m for url, m in self._latest.items() if url in urls}  # forget departed engines
        errors: dict[str, str] = {}
        for url, result in zip(urls, results, strict=True):
            if isinstance(result, EngineMetrics):
                latest[url] = result
            else:
                errors[url] = result
        self._latest, self.errors = latest, errors
        self.rounds += 1

    async def _scrape(self, client: httpx.AsyncClient, url: str) -> EngineMetrics | str:
        try:
            response = await client.get(url + "/metrics")
            response.raise_for_status()
            return parse_vllm_metrics(response.text, self._clock())
        except Exception as exc:  # one bad engine must not stop the others
            return f"{type(exc).__name__}: {exc}"

    async def run(self) -> None:
        while True:
            try:
                await self.scrape_once()
            except Exception:
                logger.exception("lodestar metrics scrape round failed")
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="lodestar-scraper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
