import socket

import httpx
import pytest

from lodestar_vllm.integrations.production_stack.scraper import MetricsScraper, parse_vllm_metrics
from tests.prodstack.fake_engine import METRICS_CURRENT, METRICS_OLD, make_engine


def test_current_metric_names_and_cache_config() -> None:
    m = parse_vllm_metrics(METRICS_CURRENT, scraped_at=5.0)
    assert (m.num_running, m.num_waiting, m.kv_cache_usage) == (3.0, 2.0, 0.25)
    assert (m.prefix_cache_queries_total, m.prefix_cache_hits_total) == (1000.0, 400.0)
    assert (m.num_preemptions_total, m.prompt_tokens_total, m.generation_tokens_total) == (7.0, 5000.0, 900.0)
    assert (m.num_gpu_blocks, m.block_size, m.scraped_at) == (2048, 16, 5.0)


def test_old_names_are_a_fallback() -> None:
    m = parse_vllm_metrics(METRICS_OLD, scraped_at=0.0)
    assert (m.kv_cache_usage, m.prefix_cache_queries_total, m.prefix_cache_hits_total) == (0.5, 10.0, 5.0)
    assert m.num_gpu_blocks is None


def test_series_of_several_models_are_summed() -> None:
    text = 'vllm:num_requests_running{model_name="a"} 1\nvllm:num_requests_running{model_name="b"} 2\n'
    assert parse_vllm_metrics(text, 0.0).num_running == 3.0


def test_garbage_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_vllm_metrics("this is { not exposition", 0.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_scrape_round_keeps_good_engines_and_reports_bad_ones() -> None:
    good = "http://good:8000"
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    transport = httpx.ASGITransport(app=make_engine("good"))

    class Routed(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.host == "good":
                return await transport.handle_async_request(request)
            raise httpx.ConnectError("connection refused", request=request)

    urls = [good, dead]
    scraper = MetricsScraper(lambda: urls, interval=0.01, timeout=1.0, clock=lambda: 42.0, transport=Routed())
    await scraper.scrape_once()
    assert scraper.latest()[good].num_running == 3.0
    assert scraper.latest()[good].scraped_at == 42.0
    assert dead not in scraper.latest() and "ConnectError" in scraper.errors[dead]
    urls.remove(good)  # a departed engine is forgotten on the next round
    await scraper.scrape_once()
    assert scraper.latest() == {} and scraper.rounds == 2
