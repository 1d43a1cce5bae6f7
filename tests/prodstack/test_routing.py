"""LearnedRouter + runtime without the host: both call styles, fallbacks, state outside the router object."""

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lodestar_vllm.core.types import DecisionPath
from lodestar_vllm.integrations.production_stack import runtime as runtime_mod
from lodestar_vllm.integrations.production_stack.routing import LearnedRouter, RoutedUrl
from lodestar_vllm.integrations.production_stack.runtime import LodestarRuntime, install_runtime
from lodestar_vllm.integrations.production_stack.settings import LodestarSettings, SettingsError
from lodestar_vllm.policies.outlier_ejection import OutlierEjection
from tests.prodstack.stub_policy import StubPolicy

URLS = ["http://a:8000", "http://b:8000"]


@dataclass
class Endpoint:
    url: str
    healthy: bool = True


@dataclass
class FakeRequest:  # what the router reads of a starlette Request: headers, and the cached body
    body: dict
    headers: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._body = json.dumps(self.body).encode()


def _runtime(policy: StubPolicy | None = None, **kw: object) -> LodestarRuntime:
    return install_runtime(LodestarRuntime(LodestarSettings(policy="stub", **kw), policy=policy or StubPolicy()))


def _router() -> LearnedRouter:
    router = LearnedRouter.__new__(LearnedRouter)  # hostless: no singleton metaclass
    router.__init__()
    return router


async def test_sync_and_awaited_calls_return_a_candidate_and_build_the_request() -> None:
    runtime = _runtime()
    router = _router()
    endpoints = [Endpoint(u) for u in URLS]
    req = FakeRequest({"model": "m", "prompt": "hello world", "max_tokens": 5}, {"X-Request-Id": "r1"})
    url = router.route_request(endpoints, {}, {}, req)  # the stock host's 4-argument sync call
    assert isinstance(url, RoutedUrl) and url in URLS
    url2 = await router.route_request(endpoints, {}, {}, req, {"model": "m", "messages": [{"content": "hi"}]})
    assert url2 in URLS and type(url2) is str
    (info1, views1), (info2, _) = runtime.policy.routes
    assert (info1.request_id, info1.model, info1.prompt_text, info1.max_tokens) == ("r1", "m", "hello world", 5)
    assert info2.prompt_text == "<|user|>\nhi\n" and info2.request_id != "r1"  # second attempt under the same id
    assert [v.url for v in views1] == URLS
    # Routed twice in one context without a dispatch in between: the first decision never ran.
    assert runtime.tracker.counts()["pending"] == 1
    assert [(o.request_id, o.error) for o in runtime.policy.outcomes] == [("r1", "not dispatched")]


def test_policy_errors_and_foreign_urls_fall_back_to_a_candidate() -> None:
    runtime = _runtime(StubPolicy(fail_route=True))
    router = _router()
    endpoints = [Endpoint(URLS[0], healthy=False), Endpoint(URLS[1])]
    for _ in range(3):
        assert router.route_request(endpoints, {}, {}, FakeRequest({"model": "m"})) == URLS[1]  # healthy first
    assert runtime.fallbacks == 3
    record = runtime.explain("lodestar-1")
    assert record is not None and record["attempts"][0]["path"] == DecisionPath.FALLBACK.value


def test_bad_request_bodies_never_raise() -> None:
    runtime = _runtime()
    router = _router()
    for request in (object(), FakeRequest([1, 2]), FakeRequest({"prompt": {"x": 1}, "max_tokens": "9"})):
        assert router.route_request([Endpoint(URLS[0])], None, None, request) == URLS[0]
    assert runtime.fallbacks == 0


def test_runtime_failure_still_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    _runtime()
    router = _router()
    runtime_mod._RUNTIME = None  # the runtime is gone and cannot be rebuilt from the environment
    monkeypatch.setenv("LODESTAR_SEED", "not-a-number")
    assert router.route_request([Endpoint(URLS[1])], {}, {}, FakeRequest({})) == URLS[1]


def test_broken_configuration_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LODESTAR_SEED", "not-a-number")
    with pytest.raises(SettingsError, match="seed"):
        _router()
    with pytest.raises(SettingsError, match="unknown lodestar setting"):
        LearnedRouter.__new__(LearnedRouter).__init__(routing_logic_config={"polcy": "x"})


def test_patched_host_config_and_listener_events() -> None:
    config = {"policy": "tests.prodstack.stub_policy:StubPolicy", "seed": 5, "scrape_interval": 0.5}
    router = LearnedRouter.__new__(LearnedRouter)
    router.__init__(routing_logic_config=config)
    runtime = runtime_mod.current_runtime()
    assert runtime is not None and runtime.policy.seed == 5 and runtime.settings.scrape_interval == 0.5

    @dataclass
    class Record:  # patches/0002's RequestAttemptRecord
        request_id: str
        engine_url: str
        status: str | None = None
        http_status: int | None = None
        error: str | None = None
        prompt_tokens: int | None = None
        completion_tokens: int | None = None
        cached_tokens: int | None = None

    url = router.route_request([Endpoint(URLS[0])], {}, {}, FakeRequest({"model": "m"}, {"X-Request-Id": "q"}))
    record = Record("q", url)
    router.on_request_start(record)
    router.on_first_token(record)
    record.status, record.http_status, record.prompt_tokens, record.cached_tokens = "success", 200, 9, 4
    router.on_request_end(record)
    router.on_request_end(record)  # a duplicate end is ignored
    [outcome] = runtime.policy.outcomes
    assert (outcome.status.value, outcome.prompt_tokens, outcome.cached_tokens, outcome.request_id) == (
        "ok", 9, 4, "q")
    assert runtime.policy.first_tokens == [("q", URLS[0])]


def test_state_survives_router_replacement() -> None:
    runtime = _runtime()
    first = _router()
    first.route_request([Endpoint(URLS[0])], {}, {}, FakeRequest({"model": "m"}))
    first.close()  # the host drops its singleton on reconfiguration
    second = _router()
    second.route_request([Endpoint(URLS[0])], {}, {}, FakeRequest({"model": "m"}))
    assert runtime_mod.current_runtime() is runtime and len(runtime.policy.routes) == 2


def test_no_endpoints_is_the_only_error() -> None:
    _runtime()
    with pytest.raises(ValueError):
        _router().route_request([], {}, {}, FakeRequest({}))


async def test_checkpoint_written_and_restored(tmp_path: Path) -> None:
    class CheckpointedStub(StubPolicy):
        def export_checkpoint(self) -> dict:
            return {"outstanding": dict(self.outstanding), "n": len(self.outcomes)}

        def load_checkpoint(self, path: str) -> None:
            import pickle

            self.loaded = pickle.loads(Path(path).read_bytes())

    path = tmp_path / "ckpt" / "state.pkl"
    runtime = _runtime(CheckpointedStub(), checkpoint_path=str(path))
    _router().route_request([Endpoint(URLS[0])], {}, {}, FakeRequest({"model": "m"}))
    await runtime.save_checkpoint()
    restored = CheckpointedStub()
    LodestarRuntime(LodestarSettings(policy="stub", checkpoint_path=str(path)), policy=restored)
    assert restored.loaded == {"outstanding": {URLS[0]: 1}, "n": 0}


def test_custom_policy_by_module_path() -> None:
    runtime = LodestarRuntime(LodestarSettings(policy="tests.prodstack.stub_policy:StubPolicy", seed=4))
    assert isinstance(runtime.policy, OutlierEjection)  # every policy sits behind outlier ejection
    assert isinstance(runtime.policy.inner, StubPolicy) and runtime.policy.inner.seed == 4
    with pytest.raises(ValueError, match="unknown policy"):
        LodestarRuntime(LodestarSettings(policy="no-such-policy"))


def test_learned_policy_trains_in_the_background_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LODESTAR_TRAINER_MODE", raising=False)
    runtime = LodestarRuntime(LodestarSettings(policy="learned"))
    try:
        assert runtime.policy.config.trainer_mode == "background"  # never inline on the router's event loop
    finally:
        runtime.policy.close()
    monkeypatch.setenv("LODESTAR_FIRST_FIT_SAMPLES", "50")
    runtime = LodestarRuntime(LodestarSettings(policy="learned", policy_options={"trainer_mode": "off"}))
    try:
        assert (runtime.policy.config.trainer_mode, runtime.policy.config.first_fit_samples) == ("off", 50)
    finally:
        runtime.policy.close()


async def test_kubernetes_awareness_started_once_and_feeds_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("kubernetes_asyncio", reason="the k8s extra (kubernetes-asyncio) is not installed")
    from lodestar_vllm.core.types import HardwareInfo
    from lodestar_vllm.integrations.kubernetes import awareness

    started: list[object] = []

    class FakeAwareness:
        closed = False

        def hardware_by_url(self) -> dict[str, HardwareInfo]:
            return {URLS[1]: HardwareInfo(gpu_class="L4")}

        def status(self) -> dict[str, int]:
            return {"known_engine_pods": 1}

        async def close(self) -> None:
            self.closed = True

    async def start_from_env(learner: object = None) -> FakeAwareness:
        started.append(learner)
        return FakeAwareness()

    monkeypatch.setattr(awareness.KubernetesAwareness, "start_from_env", staticmethod(start_from_env))
    monkeypatch.setenv("LODESTAR_K8S_ENGINE_SELECTOR", "app=vllm")
    runtime = _runtime(hardware={URLS[0]: HardwareInfo(gpu_class="H100-80GB")})
    await runtime.start()  # the lifespan path; ensure_started's task must not start a second one
    await asyncio.sleep(0)
    _router().route_request([Endpoint(u) for u in URLS], {}, {}, FakeRequest({"model": "m"}))
    _, views = runtime.policy.routes[-1]
    assert [v.hardware.gpu_class for v in views] == ["H100-80GB", "L4"]
    assert len(started) == 1 and runtime.status()["kubernetes"] == {"known_engine_pods": 1}
    k8s = runtime.k8s
    await runtime.stop()
    assert k8s.closed
