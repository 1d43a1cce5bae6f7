"""The real public traces (skip when ../shared is absent), and the fitted constants against them."""

import dataclasses

import numpy as np
import pytest

from lodestar_vllm.workloads import fitted, load_workload
from lodestar_vllm.workloads.fit import SHAREGPT, TRACES, fit, fit_sharegpt
from lodestar_vllm.workloads.fitted import TRACE_LIKE
from lodestar_vllm.workloads.readers import read_azure_csv, read_mooncake
from lodestar_vllm.workloads.stats import prefix_hit_ratio
from tests.conftest import shared_path


@pytest.fixture(autouse=True)
def _shared_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LODESTAR_SHARED", str(shared_path()))


def test_mooncake_conversation_as_documented() -> None:
    shared_path("data", "traces", "mooncake", "conversation_trace.jsonl")
    reqs = load_workload("mooncake-conversation")
    assert len(reqs) == 12031
    prompts = np.array([r.prompt_tokens for r in reqs])
    assert prompts.mean() == pytest.approx(12035, rel=0.001)
    assert np.mean([r.output_tokens for r in reqs]) == pytest.approx(343, rel=0.01)
    assert 3536 < reqs[-1].arrival_time < 3540  # ~3,537 s plus the default 3 s jitter
    # ~39% of requests continue an earlier conversation (fit.py's follow-up fraction)
    assert 1 - len({r.session_id for r in reqs}) / len(reqs) == pytest.approx(TRACE_LIKE["mooncake-like"].followup_fraction, abs=0.01)
    # jitter spreads the 3 s buckets: no two requests share a timestamp any more
    assert len({r.arrival_time for r in reqs}) == len(reqs)


def test_mooncake_text_reproduces_its_prefix_sharing() -> None:
    shared_path("data", "traces", "mooncake", "conversation_trace.jsonl")
    reqs = load_workload("mooncake-conversation", max_requests=3000)
    ids = [tuple(k for k, _ in r.segments) for r in reqs]
    by_blocks = prefix_hit_ratio(reqs, block_size=512)
    # the same ratio from the hash ids alone: longest prefix of ids seen before
    seen: set[tuple[int, ...]] = set()
    hits = 0
    for r, keys in zip(reqs, ids, strict=True):
        full = [keys[: j + 1] for j in range(len(keys)) if (j + 1) * 512 <= r.prompt_tokens]
        hits += 512 * next((j for j, p in enumerate(full) if p not in seen), len(full))
        seen.update(full)
    assert by_blocks == pytest.approx(hits / sum(r.prompt_tokens for r in reqs))
    assert by_blocks > 0.2


@pytest.mark.parametrize("name", ["azure-code", "azure-conv"])
def test_azure_traces_as_documented(name: str) -> None:
    expected = {"azure-code": (8819, 2048, 28), "azure-conv": (19366, 1155, 211)}[name]
    file = "AzureLLMInferenceTrace_code.csv" if name == "azure-code" else "AzureLLMInferenceTrace_conv.csv"
    shared_path("data", "traces", "azure2023", file)
    reqs = load_workload(name)
    assert len(reqs) == expected[0]
    assert np.mean([r.prompt_tokens for r in reqs]) == pytest.approx(expected[1], rel=0.01)
    assert np.mean([r.output_tokens for r in reqs]) == pytest.approx(expected[2], rel=0.02)


@pytest.mark.parametrize("name", sorted(TRACES))
def test_fitted_constants_are_what_the_fit_prints(name: str) -> None:
    source, parts = TRACES[name]
    path = shared_path(*parts)
    mooncake = path.suffix == ".jsonl"
    requests = read_mooncake(path) if mooncake else read_azure_csv(path)
    assert dataclasses.asdict(fit(name, source, requests, mooncake)) == dataclasses.asdict(TRACE_LIKE[name])


def test_fitted_sharegpt_lengths_are_what_the_fit_prints() -> None:
    human, gpt = fit_sharegpt(shared_path(*SHAREGPT))
    assert human == fitted.SHAREGPT_QUESTION_QUANTILES
    assert gpt == fitted.SHAREGPT_ANSWER_QUANTILES
