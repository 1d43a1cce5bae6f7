"""One learned model across router replicas: the transport-agnostic core (who publishes what, when a replica
loads), plus an in-process board so that the cluster simulator can run N replicas with the same rules.

Scheme ("train everywhere, publish the best validated"):
- every replica trains online on the outcomes it sees (its own in-flight ledger, its own replay window) and,
  every ``candidate_interval_s``, offers its current checkpoint as a *candidate* with its validation loss;
- the elected leader, every ``publish_interval_s``, picks the best fresh candidate (re-scored on its own
  held-out window when an ``evaluate`` callable is given, so that losses are comparable) and publishes it as the
  next *shared* version (monotonic);
- every replica adopts a newer shared version through ``import_`` (a refusal is counted, not fatal) and keeps
  training from it on its own outcomes, so a follower's outcomes reach the shared model through its next
  candidate; only candidates that descend from the current shared version compete (``base_version``).

The learner stays behind callables and bytes (``export() -> bytes``, ``import_(bytes) -> bool``): nothing here
imports it, Kubernetes, or a clock (``now`` is passed in).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

log = logging.getLogger(__name__)

Export = Callable[[], bytes]
Import = Callable[[bytes], bool]
# Validation loss (lower is better) of the replica's current model on its own held-out recent outcomes.
ValidationLoss = Callable[[], float | None]
# Loss of a given checkpoint on the caller's held-out recent outcomes (lets the leader compare candidates).
Evaluate = Callable[[bytes], float | None]


def digest_of(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """A checkpoint on the board. For the shared model ``version`` is the publish counter (monotonic across
    leaders); for a candidate it is the producing replica's own counter."""

    version: int
    replica: str
    digest: str
    created_at: float
    payload: bytes = field(repr=False)
    validation_loss: float | None = None
    # The shared version the producer had loaded when it exported: the lineage of these weights.
    base_version: int = 0

    @classmethod
    def of(
        cls,
        payload: bytes,
        *,
        version: int,
        replica: str,
        created_at: float,
        validation_loss: float | None = None,
        base_version: int = 0,
    ) -> ModelRecord:
        return cls(version, replica, digest_of(payload), created_at, payload, validation_loss, base_version)


@dataclass(frozen=True, slots=True)
class SharingConfig:
    candidate_interval_s: float = 30.0
    publish_interval_s: float = 30.0
    # A candidate older than this comes from a replica that is gone or stuck: never published.
    candidate_ttl_s: float = 180.0
    # With ``evaluate``: the best candidate must beat the current shared model by this relative margin.
    min_improvement: float = 0.0

    def __post_init__(self) -> None:
        if min(self.candidate_interval_s, self.publish_interval_s, self.candidate_ttl_s) <= 0:
            raise ValueError("sharing intervals and TTL must be positive")
        if not 0.0 <= self.min_improvement < 1.0:
            raise ValueError("min_improvement must be in [0, 1)")


@dataclass
class SharingStats:
    loads: int = 0  # shared versions imported
    own_versions: int = 0  # shared versions that were this replica's own weights (nothing to import)
    refusals: int = 0  # import_ returned False
    import_errors: int = 0  # import_ raised
    candidates: int = 0
    unchanged_candidates: int = 0  # nothing trained since the last candidate or the last adoption: not sent
    export_errors: int = 0
    publishes: int = 0
    publish_conflicts: int = 0  # the board refused a version (another leader got there first)


class SharingCore:
    """Per-replica decisions. Every method is cheap except the learner callables it invokes."""

    def __init__(
        self,
        replica_id: str,
        export: Export,
        import_: Import,
        *,
        validation_loss: ValidationLoss | None = None,
        evaluate: Evaluate | None = None,
        config: SharingConfig | None = None,
    ) -> None:
        if not replica_id:
            raise ValueError("replica_id must be non-empty")
        self.replica_id = replica_id
        self.config = config or SharingConfig()
        self._export = export
        self._import = import_
        self._validation_loss = validation_loss
        self._evaluate = evaluate
        self.loaded_version = 0  # the shared version this replica runs (0: none yet)
        self.stats = SharingStats()
        self._candidate_seq = 0
        self._last_candidate_at = -math.inf
        self._last_publish_at = -math.inf
        self._last_candidate_digest: str | None = None
        self._echo_digest: str | None = None  # this replica's export right after adopting a shared version
        # Digests this replica exported recently: adopting one of them needs no import.
        self._own_digests: deque[str] = deque(maxlen=8)

    # ---- every replica: follow the shared model -----------------------------------------------------------

    def wants(self, shared: ModelRecord | None) -> bool:
        return shared is not None and shared.version > self.loaded_version

    def adopt(self, shared: ModelRecord | None) -> bool:
        """Load a newer shared version; True when this replica now runs it. A version is tried once: a refusal
        is not retried until a newer version appears."""
        if shared is None or not self.wants(shared):
            return False
        # Set even when the import is refused: a replica that cannot load the shared model (a new feature
        # schema during a rolling upgrade) may then start a new lineage, which is how a fleet moves on.
        self.loaded_version = shared.version
        if shared.digest in self._own_digests:
            self.stats.own_versions += 1
            return True
        try:
            accepted = bool(self._import(shared.payload))
        except Exception as error:  # a broken checkpoint must not take the router down
            log.warning("shared model v%d from %s failed to import: %r", shared.version, shared.replica, error)
            self.stats.import_errors += 1
            return False
        if accepted:
            self.stats.loads += 1
            self._echo_digest = self._export_digest()
        else:
            self.stats.refusals += 1
        return accepted

    def _export_digest(self) -> str | None:
        # A learner may re-encode a loaded model with new metadata (load time): the bytes differ, the weights do
        # not. Remembering that echo keeps replicas from re-offering the shared model as a "new" candidate,
        # which would otherwise publish identical weights under new versions forever.
        try:
            payload = self._export()
        except Exception:
            return None
        return digest_of(payload) if payload else None

    # ---- every replica: offer its own model ---------------------------------------------------------------

    def candidate_due(self, now: float) -> bool:
        return now - self._last_candidate_at >= self.config.candidate_interval_s

    def make_candidate(self, now: float) -> ModelRecord | None:
        """This replica's current checkpoint, or None (export failed, nothing trained yet, or unchanged)."""
        self._last_candidate_at = now
        try:
            payload = self._export()
        except Exception as error:
            self.stats.export_errors += 1
            # Logged loudly once; afterwards only counted (a learner may refuse until its first fit).
            (log.warning if self.stats.export_errors == 1 else log.debug)("model export failed: %r", error)
            return None
        if not payload:
            return None
        digest = digest_of(payload)
        if digest in (self._last_candidate_digest, self._echo_digest):
            self.stats.unchanged_candidates += 1
            return None
        loss = _safe_loss(self._validation_loss) if self._validation_loss else None
        self._candidate_seq += 1
        self._own_digests.append(digest)
        return ModelRecord(self._candidate_seq, self.replica_id, digest, now, payload, loss, self.loaded_version)

    def candidate_posted(self, candidate: ModelRecord) -> None:
        """The board holds ``candidate``: the same bytes are not sent again. (A failed post is simply retried
        at the next interval.)"""
        self._last_candidate_digest = candidate.digest
        self.stats.candidates += 1

    # ---- leader: choose what everybody runs ---------------------------------------------------------------

    def publish_due(self, now: float) -> bool:
        return now - self._last_publish_at >= self.config.publish_interval_s

    def choose(
        self, candidates: Iterable[ModelRecord], shared: ModelRecord | None, now: float, *, min_version: int = 0
    ) -> ModelRecord | None:
        """The record to publish next (version = shared.version + 1, at least ``min_version`` + 1), or None when
        no fresh candidate descends from the shared model.

        Only candidates trained on top of the current shared version compete: each published model is the
        previous one plus one replica's newer outcomes, so publishing never goes back to weights that lack
        outcomes already shared (a leftover candidate from an older lineage would)."""
        self._last_publish_at = now
        fresh = [c for c in candidates if c.payload and now - c.created_at <= self.config.candidate_ttl_s]
        if shared is not None:
            fresh = [c for c in fresh if c.digest != shared.digest and c.base_version >= shared.version]
        if not fresh:
            return None
        scored = [(self._score(c), c) for c in fresh]
        # Unscored candidates rank last; among equals the newest wins (it has seen the most outcomes).
        best_loss, best = min(scored, key=lambda pair: (pair[0] is None, pair[0] or 0.0, -pair[1].created_at))
        if self._evaluate is not None and shared is not None and shared.payload and best_loss is not None:
            shared_loss = _safe_loss(lambda: self._evaluate(shared.payload))  # type: ignore[misc]
            if shared_loss is not None and best_loss >= shared_loss * (1.0 - self.config.min_improvement):
                return None
        version = max(shared.version if shared is not None else 0, min_version) + 1
        return replace(best, version=version, validation_loss=best_loss)

    def published(self, record: ModelRecord, accepted: bool) -> None:
        """The board's answer to a publish: counted so that conflicts between leaders are visible."""
        if accepted:
            self.stats.publishes += 1
        else:
            self.stats.publish_conflicts += 1

    def _score(self, candidate: ModelRecord) -> float | None:
        if self._evaluate is not None:
            return _safe_loss(lambda: self._evaluate(candidate.payload))  # type: ignore[misc]
        return candidate.validation_loss


def _safe_loss(call: Callable[[], float | None]) -> float | None:
    try:
        value = call()
    except Exception as error:
        log.warning("validation callable failed: %r", error)
        return None
    if value is None or not math.isfinite(value):
        return None
    return float(value)


class LocalBoard:
    """The shared model and the candidates held in memory: the simulator's stand-in for the ConfigMaps, with
    the same rule that a published version must be newer than the stored one."""

    def __init__(self) -> None:
        self.shared: ModelRecord | None = None
        self.candidates: dict[str, ModelRecord] = {}

    def post(self, candidate: ModelRecord) -> None:
        self.candidates[candidate.replica] = candidate

    def publish(self, record: ModelRecord) -> bool:
        if self.shared is not None and record.version <= self.shared.version:
            return False
        self.shared = record
        return True


def sharing_round(core: SharingCore, board: LocalBoard, now: float, *, is_leader: bool) -> None:
    """One replica's turn in-process, in the order the Kubernetes driver follows: adopt the newest shared model,
    offer a candidate when due, and (leader only) publish the best candidate when due."""
    core.adopt(board.shared)
    if core.candidate_due(now):
        candidate = core.make_candidate(now)
        if candidate is not None:
            board.post(candidate)
            core.candidate_posted(candidate)
    if is_leader and core.publish_due(now):
        record = core.choose(board.candidates.values(), board.shared, now)
        if record is not None:
            core.published(record, board.publish(record))
