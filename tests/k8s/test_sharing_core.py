"""The transport-agnostic sharing rules, driven in-process (as the cluster simulator does)."""

from __future__ import annotations

import json

import pytest

from lodestar_vllm.integrations.kubernetes.sharing import (
    LocalBoard,
    ModelRecord,
    SharingConfig,
    SharingCore,
    sharing_round,
)
from tests.k8s.toy_learner import ToyLearner

FAST = SharingConfig(candidate_interval_s=1.0, publish_interval_s=1.0, candidate_ttl_s=5.0)


def core_for(name: str, learner: ToyLearner, **kwargs: object) -> SharingCore:
    return SharingCore(name, learner.export, learner.import_, validation_loss=learner.validation_loss,
                       config=FAST, **kwargs)  # type: ignore[arg-type]


def record(payload: bytes, version: int, replica: str = "r", created_at: float = 0.0,
           loss: float | None = None, base: int = 0) -> ModelRecord:
    return ModelRecord.of(payload, version=version, replica=replica, created_at=created_at, validation_loss=loss,
                          base_version=base)


def test_follower_adopts_only_newer_versions_and_counts_refusals() -> None:
    learner = ToyLearner()
    core = core_for("a", learner)
    v1 = record(json.dumps(["x"]).encode(), 1)
    assert core.adopt(v1) and learner.trained == {"x"}
    assert not core.adopt(v1)  # same version: nothing to do
    assert not core.adopt(record(json.dumps(["old"]).encode(), 1))
    assert learner.imports == 1

    learner.refuse = True
    assert not core.adopt(record(json.dumps(["y"]).encode(), 2))
    assert core.stats.refusals == 1 and core.loaded_version == 2  # a refused version is not retried
    assert not core.adopt(record(json.dumps(["y"]).encode(), 2))
    assert core.stats.refusals == 1


def test_broken_callables_are_counted_not_raised() -> None:
    def boom(*_args: object) -> bytes:
        raise RuntimeError("learner bug")

    core = SharingCore("a", boom, boom, config=FAST)  # type: ignore[arg-type]
    assert core.make_candidate(0.0) is None and core.stats.export_errors == 1
    assert not core.adopt(record(b"weights", 1)) and core.stats.import_errors == 1
    with pytest.raises(ValueError):
        SharingCore("", boom, boom)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SharingConfig(publish_interval_s=0)


def test_own_weights_come_back_without_an_import() -> None:
    learner = ToyLearner()
    learner.observe("a1")
    core = core_for("a", learner)
    candidate = core.make_candidate(0.0)
    assert candidate is not None
    core.candidate_posted(candidate)
    assert core.make_candidate(2.0) is None and core.stats.unchanged_candidates == 1
    assert core.adopt(candidate.__class__(5, "a", candidate.digest, 0.0, candidate.payload))
    assert learner.imports == 0 and core.stats.own_versions == 1


def test_leader_chooses_the_best_fresh_candidate_with_the_next_version() -> None:
    leader = core_for("lead", ToyLearner())
    shared = record(b"s", 7, created_at=0.0)
    candidates = [
        record(b"stale-but-best", 1, "old", created_at=0.0, loss=0.01, base=7),  # older than the TTL at t=10
        record(b"older-lineage", 6, "f", created_at=9.8, loss=0.05, base=6),  # trained before v7: lacks its outcomes
        record(b"good", 3, "b", created_at=9.0, loss=0.2, base=7),
        record(b"better", 2, "c", created_at=8.5, loss=0.1, base=7),
        record(b"unscored", 4, "d", created_at=9.5, loss=None, base=7),
        record(b"s", 5, "e", created_at=9.9, loss=0.0, base=7),  # the shared weights themselves: nothing new
    ]
    chosen = leader.choose(candidates, shared, now=10.0)
    assert chosen is not None
    assert (chosen.payload, chosen.replica, chosen.version) == (b"better", "c", 8)
    # An unreadable shared model: any lineage may replace it, above the stored version number.
    replacement = leader.choose(candidates, None, now=10.0, min_version=7)
    assert replacement is not None and replacement.version == 8 and replacement.payload == b"s"
    assert leader.choose([], shared, now=11.0) is None
    first = leader.choose([record(b"first", 1, "b", created_at=0.0)], None, now=1.0)
    assert first is not None and first.version == 1


def test_leader_rescoring_refuses_a_candidate_worse_than_the_shared_model() -> None:
    learner = ToyLearner()
    leader = core_for("lead", learner, evaluate=learner.evaluate)
    shared = record(json.dumps(["a", "b", "c"]).encode(), 3)
    worse = record(json.dumps(["a"]).encode(), 1, "b", created_at=1.0, loss=0.0, base=3)  # self-reported loss lies
    better = record(json.dumps(["a", "b", "c", "d"]).encode(), 1, "c", created_at=1.0, loss=0.9, base=3)
    assert leader.choose([worse], shared, now=2.0) is None
    chosen = leader.choose([worse, better], shared, now=2.0)
    assert chosen is not None and chosen.replica == "c" and chosen.validation_loss == pytest.approx(0.2)


def test_local_board_keeps_versions_monotonic() -> None:
    board = LocalBoard()
    assert board.publish(record(b"a", 1))
    assert not board.publish(record(b"b", 1))
    assert board.publish(record(b"c", 3))
    assert not board.publish(record(b"d", 2))
    assert board.shared is not None and board.shared.payload == b"c"


def test_replicas_converge_and_no_replica_outcomes_are_excluded() -> None:
    learners = [ToyLearner(window=1000) for _ in range(3)]
    cores = [core_for(f"r{i}", learner) for i, learner in enumerate(learners)]
    board = LocalBoard()
    versions: list[int] = []
    now = 0.0
    for step in range(40):
        now += 0.5
        for i, learner in enumerate(learners):  # each replica routes its share of the traffic
            learner.observe(f"r{i}-{step}")
        leader = 0 if step < 20 else 2  # the lease moves half-way
        for i, core in enumerate(cores):
            sharing_round(core, board, now, is_leader=(i == leader))
        if board.shared is not None:
            versions.append(board.shared.version)
    assert versions == sorted(versions) and versions[-1] >= 10
    assert cores[0].stats.publishes > 0 and cores[2].stats.publishes > 0
    shared = set(json.loads(board.shared.payload))  # type: ignore[union-attr]
    # Outcomes from every replica, including followers that never led, are in the shared model.
    for i in range(3):
        assert {f"r{i}-{step}" for step in range(30)} <= shared, f"replica r{i} outcomes missing"


class ReencodingLearner:
    """Like LearnedPolicy: import stamps the load time into the checkpoint, so the bytes change but not the weights."""

    def __init__(self) -> None:
        self.weights: list[str] = []
        self.loaded_at = 0

    def export(self) -> bytes:
        return json.dumps({"w": self.weights, "loaded_at": self.loaded_at}).encode() if self.weights else b""

    def import_(self, payload: bytes) -> bool:
        self.weights = json.loads(payload)["w"]
        self.loaded_at += 1
        return True


def test_an_adopted_model_is_not_offered_back_as_a_new_candidate() -> None:
    learners = [ReencodingLearner(), ReencodingLearner()]
    learners[0].weights = ["trained-on-a"]
    cores = [SharingCore(f"r{i}", lr.export, lr.import_, config=FAST) for i, lr in enumerate(learners)]
    board = LocalBoard()
    now = 0.0
    for _ in range(12):  # nobody trains after the first model: versions must settle, not churn
        now += 1.0
        for i, core in enumerate(cores):
            sharing_round(core, board, now, is_leader=(i == 0))
    assert board.shared is not None and board.shared.version == 1
    assert learners[1].weights == ["trained-on-a"]
    assert cores[1].stats.unchanged_candidates >= 1 and cores[1].stats.candidates == 0
    learners[1].weights = ["trained-on-a", "trained-on-b"]  # b trains: its candidate is new again
    for _ in range(3):
        now += 1.0
        for i, core in enumerate(cores):
            sharing_round(core, board, now, is_leader=(i == 0))
    assert board.shared.version == 2 and learners[0].weights == ["trained-on-a", "trained-on-b"]
