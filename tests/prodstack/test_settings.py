import pytest

from lodestar_vllm.core.types import HardwareInfo
from lodestar_vllm.integrations.production_stack.launcher import split_argv
from lodestar_vllm.integrations.production_stack.settings import LodestarSettings, SettingsError


def test_flags_override_env_over_defaults() -> None:
    ours, rest = split_argv(
        ["--port", "8001", "--routing-logic", "learned", "--lodestar-seed", "7", "--lodestar-hardware",
         "http://a:8000=H100-80GB"]
    )
    assert rest == ["--port", "8001", "--routing-logic", "learned"]
    env = {"LODESTAR_SEED": "3", "LODESTAR_SCRAPE_INTERVAL": "0.5", "LODESTAR_POLICY_OPTIONS": '{"k": 1}'}
    s = LodestarSettings.from_sources(ours, env)
    assert (s.seed, s.scrape_interval, dict(s.policy_options), s.policy) == (7, 0.5, {"k": 1}, "learned")
    assert s.hardware == {"http://a:8000": HardwareInfo(gpu_class="H100-80GB")}


@pytest.mark.parametrize(
    "env",
    [{"LODESTAR_SEED": "x"}, {"LODESTAR_SCRAPE_INTERVAL": "0"}, {"LODESTAR_POLICY_OPTIONS": "[1]"},
     {"LODESTAR_HARDWARE": "nourl"}],
)
def test_bad_values_name_the_setting(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="lodestar"):
        LodestarSettings.from_sources(None, env)


def test_kubernetes_awareness_only_when_asked_for() -> None:
    from lodestar_vllm.integrations.production_stack.runtime import kubernetes_requested

    assert not kubernetes_requested({"LODESTAR_POLICY": "learned", "KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert not kubernetes_requested({"LODESTAR_K8S_SHARING": ""})
    assert kubernetes_requested({"LODESTAR_K8S_ENGINE_SELECTOR": "app=vllm"})
