"""Generator statistics: sharing measured on the text, lengths, burstiness, determinism."""

import numpy as np
import pytest

from lodestar_vllm.tokenizer import estimate_tokens
from lodestar_vllm.workloads import load_workload
from lodestar_vllm.workloads.fitted import TRACE_LIKE
from lodestar_vllm.workloads.multi_round_qa import MultiRoundQAParams, generate_multi_round_qa
from lodestar_vllm.workloads.prefix_sharing import PrefixSharingParams, generate_prefix_sharing
from lodestar_vllm.workloads.sampling import PERCENTILES, arrival_times, sample_quantiles
from lodestar_vllm.workloads.stats import interarrival_cv, prefix_hit_ratio, workload_stats


@pytest.mark.parametrize("sharing", [0.0, 0.3, 0.7])
def test_prefix_sharing_ratio_measured_on_text(sharing: float) -> None:
    reqs = load_workload(f"prefix-sharing-{round(sharing * 100)}", max_requests=300)
    measured = prefix_hit_ratio(reqs, block_size=16)
    # the first requests of each group miss, and partial blocks never hit: a little under the target
    assert sharing - 0.06 <= measured <= sharing + 0.005


def test_prefix_sharing_lengths_and_outputs() -> None:
    reqs = load_workload("prefix-sharing", max_requests=500)
    prompts = np.array([r.prompt_tokens for r in reqs])
    assert prompts.min() >= 1024 and prompts.max() <= 8192 and prompts.std() > 1000
    assert all(80 <= r.output_tokens <= 120 for r in reqs)
    assert all(estimate_tokens(r.prompt_text()) == r.prompt_tokens for r in reqs[:50])


@pytest.mark.parametrize("cv", [1.0, 3.0])
def test_arrival_cv_roughly_as_requested(cv: float) -> None:
    reqs = load_workload(f"prefix-sharing:cv={cv},rate=10", max_requests=3000)
    arrivals = np.array([r.arrival_time for r in reqs])
    assert interarrival_cv(arrivals) == pytest.approx(cv, rel=0.2)
    assert (len(arrivals) - 1) / arrivals[-1] == pytest.approx(10, rel=0.25)


def test_deterministic_for_a_seed_and_seeds_differ() -> None:
    for name in ("prefix-sharing", "multi-round-qa", "mooncake-like", "azure-conv-like"):
        a = load_workload(name, seed=3, max_requests=200)
        b = load_workload(name, seed=3, max_requests=200)
        c = load_workload(name, seed=4, max_requests=200)
        assert a == b, name
        assert [r.prompt_text() for r in a[:20]] == [r.prompt_text() for r in b[:20]]
        assert [r.prompt_text() for r in a[:20]] != [r.prompt_text() for r in c[:20]], name


def test_multi_round_history_grows_by_question_and_answer() -> None:
    p = MultiRoundQAParams(users=4, rounds=5, qps=2.0, system_prompt=200, user_info=300, question=10, answer=50)
    reqs = generate_multi_round_qa(p, seed=0, horizon=40.0, count=None)
    by_user: dict[str, list] = {}
    for r in sorted(reqs, key=lambda r: r.arrival_time):
        by_user.setdefault(r.session_id, []).append(r)
    full = [rs for rs in by_user.values() if rs[0].request_id.endswith("-r1") and len(rs) >= 3]
    assert full, "some users run from round 1"
    system = None
    for rounds in full:
        assert [r.prompt_tokens for r in rounds] == [510 + 60 * k for k in range(len(rounds))]
        texts = [r.prompt_text() for r in rounds]
        for prev, nxt in zip(texts, texts[1:], strict=False):
            assert nxt.startswith(prev) and len(nxt) - len(prev) == 60 * 4
        # every user starts with the same system prompt, then its own context
        system = system or texts[0][:800]
        assert texts[0][:800] == system
    firsts = [rounds[0].prompt_text() for rounds in full]
    assert len({t[800:812] for t in firsts}) == len(firsts)
    gaps = np.diff([r.arrival_time for r in full[0]])
    assert np.allclose(gaps, max(p.users / p.qps, p.answer_latency))


def test_multi_round_rate_follows_production_stack() -> None:
    # users join every (R-1)*N/qps/N s and each asks R questions: the original's rate is qps * R / (R - 1)
    p = MultiRoundQAParams(users=8, rounds=5, qps=2.0)
    reqs = generate_multi_round_qa(p, seed=0, horizon=400.0, count=None)
    late = [r.arrival_time for r in reqs if r.arrival_time >= 100]
    assert len(late) / 300 == pytest.approx(2.0 * 5 / 4, rel=0.05)


def test_multi_round_count_only_returns_enough() -> None:
    reqs = load_workload("multi-round-qa", max_requests=1000)
    assert len(reqs) == 1000


@pytest.mark.parametrize("name", sorted(TRACE_LIKE))
def test_trace_like_matches_its_fitted_parameters(name: str) -> None:
    params = TRACE_LIKE[name]
    reqs = load_workload(name)  # the whole fitted span
    stats = workload_stats(reqs, measure_sharing=False)
    assert stats.duration_s <= params.duration
    if params.cv < 5:
        assert stats.rate_per_s == pytest.approx(params.rate, rel=0.15)
        assert stats.interarrival_cv == pytest.approx(params.cv, rel=0.2)
    else:  # azure-code (cv 13): one hour holds too few bursts to pin the rate; the burstiness shows
        assert stats.interarrival_cv > 8
    outputs = np.array([r.output_tokens for r in reqs])
    assert np.median(outputs) == pytest.approx(params.output_quantiles[PERCENTILES.index(50)], rel=0.15)
    assert stats.prompt_max <= params.max_prompt


def test_mooncake_like_sharing_and_sessions() -> None:
    reqs = load_workload("mooncake-like", duration=900)
    hit = prefix_hit_ratio(reqs, block_size=512)
    # the full-length generated workload measures 0.373 like the trace (fit.py); 15 min warm up less
    assert 0.2 < hit < 0.45
    sessions = {r.session_id for r in reqs}
    assert len(reqs) * 0.5 < len(sessions) < len(reqs) * 0.75  # ~39% of requests continue a conversation
    texts = [r.prompt_text() for r in reqs[:50]]
    assert len({t[: 512 * 4] for t in texts}) == 1  # one common first block, as in the trace


def test_quantile_sampling_reproduces_the_table() -> None:
    rng = np.random.default_rng(0)
    table = tuple(np.percentile(rng.lognormal(6, 1.2, size=100_000), PERCENTILES))
    draws = sample_quantiles(rng, table, 50_000)
    for q in (10, 50, 90, 99):
        assert np.percentile(draws, q) == pytest.approx(np.interp(q, PERCENTILES, table), rel=0.05)
    assert draws.min() >= int(table[0]) and draws.max() <= round(table[-1])
    with pytest.raises(ValueError, match="quantile table"):
        sample_quantiles(rng, (1, 2, 3), 5)


def test_arrival_times_bounds_and_errors() -> None:
    rng = np.random.default_rng(0)
    assert len(arrival_times(rng, 5.0, 1.0, horizon=None, count=77)) == 77
    t = arrival_times(rng, 5.0, 2.0, horizon=60.0, count=None)
    assert t.max() < 60 and np.all(np.diff(t) >= 0)
    assert np.allclose(np.diff(arrival_times(rng, 4.0, 0.0, horizon=None, count=5)), 0.25)
    with pytest.raises(ValueError):
        arrival_times(rng, 0.0, 1.0, horizon=1.0, count=None)
    with pytest.raises(ValueError):
        arrival_times(rng, 1.0, 1.0, horizon=None, count=None)


def test_generator_params_are_validated() -> None:
    with pytest.raises(ValueError, match="sharing"):
        generate_prefix_sharing(PrefixSharingParams(sharing=1.2), seed=0, horizon=None, count=5)


def test_rate_swings_keep_the_mean_and_add_window_dispersion() -> None:
    rng = np.random.default_rng(5)
    sigma, rate, window = 0.3, 5.0, 30.0
    t = arrival_times(rng, rate, 1.0, horizon=30_000.0, count=None, rate_sigma=sigma, window_s=window)
    assert len(t) / 30_000.0 == pytest.approx(rate, rel=0.05)
    counts = np.bincount((t // window).astype(int))
    m = counts.mean()
    expected = m + m * m * (np.exp(sigma * sigma) - 1)  # Poisson noise + the swings
    assert counts.var() == pytest.approx(expected, rel=0.3)
    plain = np.bincount((arrival_times(rng, rate, 1.0, horizon=30_000.0, count=None) // window).astype(int))
    assert plain.var() < counts.var() / 3
    capped = arrival_times(rng, rate, 1.0, horizon=None, count=500, rate_sigma=sigma)
    assert len(capped) == 500 and np.all(np.diff(capped) >= 0)


def test_multi_round_sharegpt_lengths_vary_and_history_stays_consistent() -> None:
    p = MultiRoundQAParams(users=4, rounds=6, qps=2.0, lengths="sharegpt", answer=200, question_max=500)
    reqs = generate_multi_round_qa(p, seed=1, horizon=200.0, count=None)
    assert all(1 <= r.output_tokens <= 200 for r in reqs)
    assert len({r.output_tokens for r in reqs}) > 10
    by_user: dict[str, list] = {}
    for r in reqs:
        by_user.setdefault(r.session_id, []).append(r)
    for rounds in by_user.values():
        texts = [r.prompt_text() for r in rounds]
        for prev, nxt, prev_req in zip(texts, texts[1:], rounds, strict=False):
            # the next prompt = this prompt + its answer + a new question of at most question_max tokens
            assert nxt.startswith(prev)
            added = (len(nxt) - len(prev)) // 4
            assert prev_req.output_tokens + 1 <= added <= prev_req.output_tokens + 500
    with pytest.raises(ValueError, match="lengths"):
        generate_multi_round_qa(MultiRoundQAParams(lengths="zipf"), seed=0, horizon=10.0, count=None)


def test_prefix_sharing_fixed_system_prompt_length() -> None:
    reqs = load_workload("prefix-sharing:system_prompt=1000,groups=2", max_requests=60)
    texts = [r.prompt_text() for r in reqs]
    heads = {t[:4000] for t in texts}
    assert len(heads) == 2  # two groups, each a 1,000-token system prompt
    # right after the system prompt every request is unique
    assert len({t[4000:4012] for t in texts}) == len(texts)
    with pytest.raises(ValueError, match="system_prompt"):
        load_workload("prefix-sharing:system_prompt=2000")
