"""production-stack's multi-round QA benchmark (benchmarks/multi-round-qa/multi-round-qa.py), open-loop.

Semantics kept from the original: at most ``users`` users are active; each asks ``rounds`` questions, one every
``users / qps`` seconds, so the cluster sees ``qps`` overall. A user's first prompt is the shared system prompt
(``system_prompt`` tokens) + that user's own context (``user_info`` tokens) + the question; every later prompt is
the whole conversation so far (each question and its ``answer``-token reply) + the new question. Users join one
every ``(rounds - 1) * users / qps / users`` seconds, and the run starts already ramped up, as the original's
``_ramp_up`` does: ``users`` sessions begin part-way through their rounds (with empty history, as there).

The original waits for a reply before asking again; an open-loop simulator cannot, so a user's next question
comes ``max(users / qps, answer_latency)`` after the previous one: ``answer_latency`` stands in for the
expected time to answer (TTFT + answer tokens x inter-token latency).

``lengths=sharegpt`` follows the original's ``--sharegpt`` mode in lengths only: each question is as long as a
ShareGPT human turn (capped at ``question_max``) and each answer ``min(ShareGPT reply, answer)`` tokens, with
quantiles fitted by ``python -m lodestar_vllm.workloads.fit``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lodestar_vllm.workloads.fitted import SHAREGPT_ANSWER_QUANTILES, SHAREGPT_QUESTION_QUANTILES
from lodestar_vllm.workloads.sampling import sample_quantiles
from lodestar_vllm.workloads.text import stable_key
from lodestar_vllm.workloads.types import Segment, WorkloadRequest


@dataclass(frozen=True, slots=True)
class MultiRoundQAParams:
    users: int = 32
    rounds: int = 10
    qps: float = 4.0
    system_prompt: int = 1000
    user_info: int = 2000
    question: int = 16  # "Here's question #k: can you tell me a new long story with a happy ending?"
    answer: int = 100
    answer_latency: float = 2.0  # seconds
    duration: float = 600.0  # when neither duration nor max_requests is asked for
    lengths: str = "fixed"  # or "sharegpt": question and answer lengths drawn from ShareGPT turns
    question_max: int = 2048  # cap on a ShareGPT question (a few pasted documents run to 100k+ tokens)

    def validate(self) -> None:
        if self.lengths not in ("fixed", "sharegpt"):
            raise ValueError(f"lengths must be fixed or sharegpt, got {self.lengths!r}")
        if self.users < 1 or self.rounds < 1 or self.qps <= 0:
            raise ValueError("need users >= 1, rounds >= 1, qps > 0")
        if min(self.system_prompt, self.user_info, self.answer) < 0 or self.question < 1 or self.answer < 1:
            raise ValueError("token lengths must be >= 0 (question, answer >= 1)")


def _user_requests(
    p: MultiRoundQAParams, seed: int, uid: int, start: float, first_round: int, step: float, horizon: float
) -> list[WorkloadRequest]:
    history: list[Segment] = [(stable_key("mrqa-system", seed), p.system_prompt),
                              (stable_key("mrqa-user", seed, uid), p.user_info)]
    history = [s for s in history if s[1] > 0]
    questions, answers = _lengths(p, seed, uid)
    out = []
    t = start
    for k in range(first_round, p.rounds + 1):
        if t >= horizon:
            break
        history.append((stable_key("mrqa-question", seed, uid, k), int(questions[k - 1])))
        out.append(
            WorkloadRequest(
                request_id=f"mrqa-u{uid}-r{k}",
                arrival_time=t,
                prompt_tokens=sum(n for _, n in history),
                output_tokens=int(answers[k - 1]),
                session_id=f"user-{uid}",
                segments=tuple(history),
            )
        )
        history.append((stable_key("mrqa-answer", seed, uid, k), int(answers[k - 1])))
        t += step
    return out


def _lengths(p: MultiRoundQAParams, seed: int, uid: int) -> tuple[np.ndarray, np.ndarray]:
    if p.lengths == "fixed":
        return np.full(p.rounds, p.question), np.full(p.rounds, p.answer)
    rng = np.random.default_rng([seed, 11, uid])
    questions = np.minimum(sample_quantiles(rng, SHAREGPT_QUESTION_QUANTILES, p.rounds), p.question_max)
    return questions, np.minimum(sample_quantiles(rng, SHAREGPT_ANSWER_QUANTILES, p.rounds), p.answer)


def _generate(p: MultiRoundQAParams, seed: int, horizon: float) -> list[WorkloadRequest]:
    gap = p.users / p.qps
    step = max(gap, p.answer_latency)
    user_gap = gap * (p.rounds - 1) / p.users if p.rounds > 1 else 1.0 / p.qps
    out: list[WorkloadRequest] = []
    uid = 0
    # Ramp-up: user i is (users - i) * user_gap seconds into its session at t=0 (the original's offsets).
    for i in range(p.users):
        uid += 1
        offset = (p.users - i) * user_gap
        passed = int(offset / gap) + 1
        if passed >= p.rounds:
            continue
        out += _user_requests(p, seed, uid, passed * gap - offset, passed + 1, step, horizon)
    join = 0.0
    while join < horizon:
        uid += 1
        out += _user_requests(p, seed, uid, join, 1, step, horizon)
        join += user_gap
    return out


def generate_multi_round_qa(
    params: MultiRoundQAParams, *, seed: int, horizon: float | None, count: int | None
) -> list[WorkloadRequest]:
    params.validate()
    if horizon is not None:
        return _generate(params, seed, horizon)
    if count is None:
        return _generate(params, seed, params.duration)
    # Only a count: grow the horizon until it holds that many (the caller keeps the earliest ``count``).
    span = count / params.qps + params.rounds * params.users / params.qps
    while True:
        out = _generate(params, seed, span)
        if len(out) >= count:
            return out
        span *= 2
