from dataclasses import dataclass

from lodestar_vllm.core.types import EngineMetrics, HardwareInfo
from lodestar_vllm.integrations.production_stack.views import build_views


@dataclass
class Endpoint:  # the fields of vllm_router's EndpointInfo the views read
    url: str
    healthy: bool | None = True
    model_label: str = "default"


@dataclass
class HostStats:  # vllm_router's EngineStats
    num_running_requests: float = 4
    num_queuing_requests: float = 1
    gpu_prefix_cache_hit_rate: float = 0.0
    gpu_prefix_cache_hits_total: float = 0
    gpu_prefix_cache_queries_total: float = 0
    gpu_cache_usage_perc: float = 0.0


def test_our_scrape_wins_then_host_stats_then_nothing() -> None:
    ours = EngineMetrics(scraped_at=1.0, num_running=9, kv_cache_usage=0.7)
    endpoints = [Endpoint("http://a:8000"), Endpoint("http://b:8000", healthy=False), Endpoint("http://c:8000")]
    views = build_views(
        endpoints,
        {"http://a:8000": HostStats(), "http://b:8000": HostStats()},
        {"http://a:8000": ours},
        {"http://c:8000": HardwareInfo(gpu_class="L4")},
        now=10.0,
    )
    assert [v.url for v in views] == ["http://a:8000", "http://b:8000", "http://c:8000"]
    assert views[0].metrics is ours
    assert views[1].metrics is not None and views[1].metrics.num_running == 4 and views[1].metrics.scraped_at == 10.0
    assert views[1].healthy is False
    assert views[2].metrics is None and views[2].hardware == HardwareInfo(gpu_class="L4")


def test_gpu_label_is_read_only_when_explicit() -> None:
    views = build_views([Endpoint("http://a", model_label="gpu=H100-80GB"), Endpoint("http://b")], {}, {}, {}, 0.0)
    assert views[0].hardware == HardwareInfo(gpu_class="H100-80GB")
    assert views[1].hardware is None


def test_an_engine_our_scrape_cannot_reach_is_unhealthy() -> None:
    views = build_views([Endpoint("http://a:8000/"), Endpoint("http://b:8000")], {}, {}, {}, 0.0,
                        unreachable={"http://a:8000": "ConnectError"})
    assert [v.healthy for v in views] == [False, True]
