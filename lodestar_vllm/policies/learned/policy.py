"""The learned router: predict each candidate's TTFT, route to the best, learn from what happened.

One decision: request -> block hashes -> feature rows (features.py) -> fallback pick (always computed) ->
locality guard mask -> ensemble prediction (numpy) -> choice (argmin of mean + uncertainty, ties to more
prefix reuse; decaying exploration) -> dispatch into the ledger and the prefix index. One outcome: ledger
record -> rates, guardrail, metrics -> training sample -> trainer (inline or background) -> new weights.

Paths: cold start / out-of-distribution / guardrail / shadow / internal error use the fallback; the guard
narrows the candidates when the fleet's KV cache is saturated and the prompt's prefix is hot.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lodestar_vllm.core import checkpoint
from lodestar_vllm.core.config import LearnedConfig
from lodestar_vllm.core.features import SCHEMA_VERSION, CandidateFeatures, FeatureBuilder
from lodestar_vllm.core.ledger import DecisionRecord, Ledger
from lodestar_vllm.core.predictor import ModelWeights, predict, range_distance
from lodestar_vllm.core.prefix_index import PrefixIndex
from lodestar_vllm.core.rates import RateTracker
from lodestar_vllm.core.trainer import OnlineTrainer
from lodestar_vllm.core.types import (
    Decision,
    DecisionPath,
    InstanceView,
    Outcome,
    OutcomeStatus,
    RequestInfo,
)
from lodestar_vllm.metrics import LodestarMetrics, lodestar_metrics
from lodestar_vllm.policies.base import RoutingPolicy
from lodestar_vllm.policies.learned.fallback import fallback_choice
from lodestar_vllm.policies.learned.guard import LocalityGuard
from lodestar_vllm.policies.learned.guardrail import Guardrail
from lodestar_vllm.tokenizer import estimate_tokens

log = logging.getLogger("lodestar_vllm.learned")

SHADOW = "shadow"
CONTROL = "control"
_PENDING_COL = 6
_MATCH_COL = 1
_AGE_COL = 12
_MAX_URLS = 4096
_BASE_TIE = 0.03


class _Explanation:
    """What a decision saw; rendered into a dict only when someone asks (keeps the request path cheap)."""

    __slots__ = ("request_id", "now", "feats", "mean", "spread", "chosen", "path", "reason", "fallback",
                 "allowed", "shadow_choice")

    def __init__(self, request_id: str, now: float, feats: CandidateFeatures, mean: np.ndarray | None,
                 spread: np.ndarray | None, chosen: int, path: str, reason: str, fallback: int,
                 allowed: np.ndarray | None, shadow_choice: int | None) -> None:
        self.request_id = request_id
        self.now = now
        self.feats = feats
        self.mean = mean
        self.spread = spread
        self.chosen = chosen
        self.path = path
        self.reason = reason
        self.fallback = fallback
        self.allowed = allowed
        self.shadow_choice = shadow_choice

    def render(self, names: Sequence[str]) -> dict[str, Any]:
        f = self.feats
        cands = []
        for i, url in enumerate(f.urls):
            row: dict[str, Any] = {
                "url": url,
                "features": {n: round(float(v), 5) for n, v in zip(names, f.matrix[i], strict=True)},
                "matched_tokens": int(f.matched_tokens[i]),
                "uncached_tokens": int(f.uncached_tokens[i]),
                "analytic_ttft_s": float(f.analytic_ttft[i]),
                "allowed_by_guard": True if self.allowed is None else bool(self.allowed[i]),
            }
            if self.mean is not None and self.spread is not None:
                row["predicted_ttft_s"] = float(math.exp(self.mean[i]))
                row["log_spread"] = float(self.spread[i])
            cands.append(row)
        out = {"request_id": self.request_id, "at": self.now, "chosen": f.urls[self.chosen], "path": self.path,
               "reason": self.reason, "fallback_choice": f.urls[self.fallback], "candidates": cands}
        if self.shadow_choice is not None:
            out["model_choice"] = f.urls[self.shadow_choice]
        return out


class LearnedPolicy(RoutingPolicy):
    name: ClassVar[str] = "learned"

    def __init__(self, seed: int = 0, config: LearnedConfig | Mapping[str, Any] | None = None,
                 metrics: LodestarMetrics | None = None, **options: Any) -> None:
        if isinstance(config, LearnedConfig):
            cfg = replace(config, **options) if options else config
        else:
            cfg = LearnedConfig.from_dict({**dict(config or {}), **options})
        self.config = cfg
        self.seed = seed
        self._rng = random.Random(seed)
        self.metrics = metrics or lodestar_metrics()
        self.index = PrefixIndex(cfg.index_block_tokens, cfg.index_default_capacity_blocks,
                                 cfg.index_max_total_blocks, cfg.freshness_half_life_s)
        self.ledger = Ledger(cfg.ledger_max_records, cfg.ledger_ttl_s, cfg.explain_ring_size)
        self.rates = RateTracker(cfg.rate_ewma_alpha, cfg.prior_prefill_tokens_per_s, cfg.prior_decode_step_s,
                                 cfg.rate_min_tokens)
        self.features = FeatureBuilder(self.index, self.ledger, self.rates, cfg.known_gpu_classes)
        self.trainer = OnlineTrainer(cfg, seed=seed, on_result=self._on_fit)
        self.guard = LocalityGuard(cfg.guard_kv_threshold, cfg.guard_candidates, cfg.guard_hot_count,
                                   cfg.guard_window)
        self.guardrail = Guardrail(cfg.guardrail_window, cfg.guardrail_margin, cfg.guardrail_cooldown_s,
                                   cfg.guardrail_control_samples)
        self.shadow = cfg.shadow
        self._m_paths = {p: self.metrics.decisions.labels(path=p) for p in [*DecisionPath, SHADOW]}
        self._m_fallback: dict[str, Any] = {}
        self._gpu_class_of: dict[str, str | None] = {}
        self._engine_ewma: dict[str, list[float]] = {}  # url -> [predicted, observed] EWMA
        self._abs_log_err = math.nan
        self._model_path_n = 0
        self._path_counts: dict[str, int] = {}
        self._errors = 0
        self._unknown_outcomes = 0
        self._shadow_gain_sum = 0.0
        self._shadow_n = 0
        self._last_now = 0.0
        self._seen_restarts = 0

    # --- runtime switches -------------------------------------------------------------------------------
    def set_shadow(self, enabled: bool) -> None:
        """Shadow mode: route with the fallback, still predict and record what the model would have chosen."""
        if enabled != self.shadow:
            log.info("lodestar: shadow mode %s", "on" if enabled else "off",
                     extra={"event": "shadow_mode", "enabled": enabled})
        self.shadow = enabled

    @property
    def model(self) -> ModelWeights | None:
        return self.trainer.current

    # --- routing ----------------------------------------------------------------------------------------
    def route(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Decision:
        started = time.perf_counter()
        try:
            decision = self._route(request, candidates, now)
        except Exception as exc:  # the contract: never raise, always return a candidate
            self._errors += 1
            log.exception("lodestar: routing error, using a safe choice",
                          extra={"event": "route_error", "request_id": getattr(request, "request_id", None)})
            decision = self._safe_decision(request, candidates, now, f"error: {type(exc).__name__}")
        self.metrics.decision_latency.observe(time.perf_counter() - started)
        return decision

    def _safe_decision(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float,
                       reason: str) -> Decision:
        healthy = [c for c in candidates if c.healthy] or list(candidates)
        counts = self.ledger.counters([c.url for c in healthy])[0]
        url = healthy[int(np.argmin(counts))].url
        try:
            self.ledger.dispatch(DecisionRecord(
                request_id=str(request.request_id), url=url, dispatched_at=now, path=DecisionPath.FALLBACK.value,
                reason=reason, prompt_tokens=0, uncached_tokens=0, decode_tokens=0))
        except Exception:  # noqa: BLE001 - accounting is best effort here; routing must go on
            pass
        self._count_path(DecisionPath.FALLBACK.value, reason)
        return Decision(url, DecisionPath.FALLBACK, None, reason)

    def _route(self, request: RequestInfo, candidates: Sequence[InstanceView], now: float) -> Decision:
        cfg = self.config
        self._last_now = now
        pool = [c for c in candidates if c.healthy] or list(candidates)
        text = request.prompt_text or ""
        prompt_tokens = int(request.prompt_tokens) if request.prompt_tokens else estimate_tokens(text)
        decode_tokens = int(request.max_tokens) if request.max_tokens else cfg.default_decode_tokens
        hashes = self.index.hashes(text)
        feats = self.features.build(prompt_tokens, decode_tokens, hashes, pool, now)
        n = len(pool)
        group = self.guard.group_of(hashes)
        allowed = self.guard.allowed(group, feats)
        mask = allowed if allowed is not None else np.ones(n, dtype=bool)
        fb = fallback_choice(feats, mask, cfg.tie_tolerance)

        model = self.trainer.current
        mean = spread = None
        chosen = fb
        shadow_choice: int | None = None
        predicted: float | None = None
        self.guardrail.maybe_recover(now, model.version if model is not None else 0)
        in_dist = None if model is None else range_distance(model, feats.matrix) <= cfg.ood_range_margin
        if model is None or in_dist is None:
            path, reason = DecisionPath.FALLBACK.value, "cold_start"
        elif not in_dist[fb]:
            path, reason = DecisionPath.FALLBACK.value, "out_of_distribution"
        else:
            mean, spread = predict(model, feats.matrix)
            if not (np.isfinite(mean).all() and np.isfinite(spread).all()):
                path, reason, mean, spread = DecisionPath.FALLBACK.value, "non_finite_prediction", None, None
            else:
                pick, path, reason = self._choose(feats, mean, spread, mask & in_dist, model)
                if allowed is not None and path == DecisionPath.MODEL.value:
                    path, reason = DecisionPath.GUARD.value, "hot prefix on a saturated fleet"
                if self.shadow:
                    shadow_choice = pick
                    self._shadow_gain_sum += math.exp(mean[fb]) - math.exp(mean[pick])
                    self._shadow_n += 1
                    path, reason = SHADOW, "shadow mode"
                elif self.guardrail.active:
                    shadow_choice = pick
                    path, reason = DecisionPath.FALLBACK.value, "guardrail"
                elif self._rng.random() < cfg.guardrail_control_fraction:
                    shadow_choice = pick
                    path, reason = DecisionPath.FALLBACK.value, CONTROL
                else:
                    chosen = pick
                predicted = float(math.exp(mean[chosen]))
        if allowed is not None and path == DecisionPath.FALLBACK.value and reason == "cold_start":
            reason = "cold_start (guarded)"

        url = feats.urls[chosen]
        if feats.has_metrics[chosen]:
            self.metrics.feature_staleness.observe(math.expm1(feats.matrix[chosen, _AGE_COL]))
        self.ledger.dispatch(DecisionRecord(
            request_id=str(request.request_id), url=url, dispatched_at=now, path=path, reason=reason,
            prompt_tokens=prompt_tokens, uncached_tokens=int(feats.uncached_tokens[chosen]),
            decode_tokens=decode_tokens, prefill_ahead=int(feats.pending_prefill[chosen]),
            predicted_ttft=predicted, analytic_ttft=float(feats.analytic_ttft[chosen]),
            features=feats.matrix[chosen].copy(), fallback_url=feats.urls[fb],
            fallback_analytic_ttft=float(feats.analytic_ttft[fb])))
        self.index.insert(url, hashes, now)
        self.guard.observe(group)
        if url not in self._gpu_class_of and len(self._gpu_class_of) >= _MAX_URLS:
            self._gpu_class_of.pop(next(iter(self._gpu_class_of)))
        self._gpu_class_of[url] = feats.gpu_classes[chosen]
        self.ledger.remember(str(request.request_id), _Explanation(
            str(request.request_id), now, feats, mean, spread, chosen, path, reason, fb, allowed, shadow_choice))
        self._count_path(path, reason)
        if path == SHADOW:
            return Decision(url, DecisionPath.FALLBACK, predicted, reason)
        return Decision(url, DecisionPath(path), predicted, reason)

    def _choose(self, feats: CandidateFeatures, mean: np.ndarray, spread: np.ndarray, mask: np.ndarray,
                model: ModelWeights) -> tuple[int, str, str]:
        cfg = self.config
        score = mean + cfg.uncertainty_weight * spread
        score = np.where(mask, score, np.inf)
        best = float(score.min())
        # A candidate holding a fraction f of the prompt may be predicted up to (1 + 0.03 + tie_tolerance x f)
        # times the best and still win on reuse: its cache hit also spares capacity for later requests, and
        # that is worth more the more of the prompt it covers.
        frac = feats.matched_tokens / max(feats.prompt_tokens, 1)
        near = score <= best + np.log1p(_BASE_TIE + cfg.tie_tolerance * frac)
        # Among those: the most prefix reuse (keeps cache locality), then the lower score.
        key = np.where(near, feats.matched_tokens - 1e-6 * score, -np.inf)
        pick = int(np.argmax(key))
        eps = max(cfg.explore_min, cfg.explore_initial / (1.0 + self.trainer.stats.samples_seen
                                                          / cfg.explore_decay_samples))
        if self._rng.random() < eps:
            pool = np.flatnonzero(mask & (score <= best + math.log1p(cfg.explore_margin)))
            pool = pool[pool != pick]
            if pool.size:
                return int(pool[self._rng.randrange(pool.size)]), DecisionPath.EXPLORATION.value, \
                    f"exploration (epsilon {eps:.3f})"
        return pick, DecisionPath.MODEL.value, f"model v{model.version}"

    def _count_path(self, path: str, reason: str) -> None:
        self._path_counts[path] = self._path_counts.get(path, 0) + 1
        self._m_paths[path].inc()
        if path == DecisionPath.FALLBACK.value:
            child = self._m_fallback.get(reason)
            if child is None:
                key = reason.split(" ")[0].split(":")[0]
                child = self._m_fallback[reason] = self.metrics.fallbacks.labels(reason=key)
            child.inc()

    # --- feedback ---------------------------------------------------------------------------------------
    def on_first_token(self, request_id: str, url: str, now: float) -> None:
        try:
            self.ledger.first_token(request_id, now)
        except Exception:  # noqa: BLE001 - feedback must never break the host
            log.exception("lodestar: on_first_token failed", extra={"event": "feedback_error"})

    def on_outcome(self, outcome: Outcome) -> None:
        try:
            self._on_outcome(outcome)
        except Exception:  # noqa: BLE001 - feedback must never break the host
            self._errors += 1
            log.exception("lodestar: on_outcome failed", extra={"event": "feedback_error"})

    def _on_outcome(self, outcome: Outcome) -> None:
        record = self.ledger.complete(outcome.request_id)
        if record is None:
            self._unknown_outcomes += 1
            return
        self.metrics.ledger_records.set(len(self.ledger))
        self.metrics.prefix_index_blocks.set(len(self.index))
        ttft = outcome.ttft
        if outcome.status != OutcomeStatus.OK or ttft is None or ttft <= 0 or record.features is None:
            return
        cfg = self.config
        cls = self._gpu_class_of.get(record.url)
        uncached = record.uncached_tokens
        if outcome.cached_tokens is not None and outcome.prompt_tokens:
            uncached = max(outcome.prompt_tokens - outcome.cached_tokens, 1)
        e2e = outcome.e2e
        self.rates.observe(record.url, cls, record.prefill_ahead + uncached, ttft,
                           None if e2e is None else e2e - ttft, outcome.completion_tokens)
        model = self.trainer.current
        control = record.reason == CONTROL
        if control or record.path in (DecisionPath.MODEL.value, DecisionPath.GUARD.value):
            if self.guardrail.observe(ttft, control, outcome.first_token_at or record.dispatched_at,
                                      model.version if model else 0):
                self.metrics.guardrail_trips.inc()
        self.metrics.guardrail_active.set(1.0 if self.guardrail.active else 0.0)
        if record.predicted_ttft:
            ratio = record.predicted_ttft / ttft
            self.metrics.prediction_ratio.observe(ratio)
            err = abs(math.log(ratio))
            self._abs_log_err = err if math.isnan(self._abs_log_err) else 0.98 * self._abs_log_err + 0.02 * err
            self._model_path_n += 1
            self._engine_gauges(record.url, record.predicted_ttft, ttft)
        if cfg.objective == "e2e":
            if e2e is None or e2e <= 0:
                return
            target = math.log(e2e)
        elif cfg.objective == "slo":
            target = 1.0 if ttft > cfg.slo_ttft_s else 0.0
        else:
            target = math.log(ttft)
        x = record.features
        bucket = (min(int(x[_PENDING_COL] // 2), 6), min(int(x[_MATCH_COL] * 3), 2))
        self.trainer.add(x, target, bucket)
        if self.trainer.stats.restarts > self._seen_restarts:
            self.metrics.trainer_restarts.inc(self.trainer.stats.restarts - self._seen_restarts)
            self._seen_restarts = self.trainer.stats.restarts
        self.metrics.replay_size.set(self.trainer.buffer.replay_size)
        if model is not None:
            self.metrics.model_age.set(max(0.0, (outcome.first_token_at or 0.0) - model.created_at))

    def _engine_gauges(self, url: str, predicted: float, observed: float) -> None:
        pair = self._engine_ewma.get(url)
        if pair is None:
            if len(self._engine_ewma) >= 1024:
                self._engine_ewma.pop(next(iter(self._engine_ewma)))
            pair = self._engine_ewma[url] = [predicted, observed]
        else:
            pair[0] += 0.05 * (predicted - pair[0])
            pair[1] += 0.05 * (observed - pair[1])
        self.metrics.engine_predicted_ttft.labels(engine=url).set(pair[0])
        self.metrics.engine_observed_ttft.labels(engine=url).set(pair[1])

    def _on_fit(self, model: ModelWeights | None, info: dict[str, Any]) -> None:
        result = str(info.get("result", "unknown"))
        self.metrics.training_runs.labels(result=result).inc()
        if "duration_s" in info:
            self.metrics.training_duration.observe(info["duration_s"])
            self.metrics.training_samples.set(info.get("train_samples", 0))
        if model is None:
            self.metrics.fits_rejected.labels(reason=result).inc()
            return
        model.created_at = self._last_now
        self.metrics.model_version.set(model.version)

    # --- observability ----------------------------------------------------------------------------------
    def explain(self, request_id: str) -> dict[str, Any] | None:
        entry = self.ledger.explanation(request_id)
        return None if entry is None else entry.render(self.features.names)

    def status(self) -> dict[str, Any]:
        model = self.trainer.current
        return {
            "policy": self.name,
            "shadow": self.shadow,
            "model": None if model is None else {
                "version": model.version, "objective": model.objective, "heads": model.heads,
                "trained_samples": model.trained_samples, "created_at": model.created_at,
                "holdout_loss": model.holdout_loss if math.isfinite(model.holdout_loss) else None},
            "recent_accuracy": {"mean_abs_log_ratio": None if math.isnan(self._abs_log_err) else self._abs_log_err,
                                "model_path_outcomes": self._model_path_n},
            "paths": dict(self._path_counts),
            "shadow_predicted_gain_s": (self._shadow_gain_sum / self._shadow_n) if self._shadow_n else None,
            "guardrail": self.guardrail.snapshot(),
            "guard_activations": self.guard.activations,
            "trainer": self.trainer.snapshot(),
            "rates": self.rates.snapshot(),
            "ledger": {"records": len(self.ledger), "expired": self.ledger.expired, "evicted": self.ledger.evicted,
                       "per_engine": self.ledger.per_url()},
            "prefix_index": {"blocks": len(self.index), "evictions": self.index.evictions,
                             "per_engine": {u: self.index.blocks(u) for u in self.index.urls()}},
            "errors": self._errors,
            "unknown_outcomes": self._unknown_outcomes,
            "config": self.config.to_dict(),
        }

    # --- checkpoints ------------------------------------------------------------------------------------
    def export_checkpoint(self) -> bytes:
        model = self.trainer.current
        if model is None:
            raise RuntimeError("no trained model to export yet")
        return checkpoint.encode(model, schema_version=SCHEMA_VERSION, feature_names=self.features.names,
                                 gpu_class_rates=self.rates.export_classes(),
                                 extra={"objective": self.config.objective})

    def import_checkpoint(self, blob: bytes) -> bool:
        """Warm start from bytes; a mismatched or corrupt blob is refused (logged) and routing goes on."""
        try:
            model, meta = checkpoint.decode(blob, schema_version=SCHEMA_VERSION, feature_names=self.features.names)
            if model.objective != self.config.objective:
                raise checkpoint.CheckpointError(
                    f"checkpoint objective {model.objective!r} != configured {self.config.objective!r}")
        except checkpoint.CheckpointError as exc:
            self.metrics.checkpoint_refused.inc()
            log.warning("lodestar: checkpoint refused: %s", exc, extra={"event": "checkpoint_refused",
                                                                        "error": str(exc)})
            return False
        self.rates.import_classes(meta.get("gpu_class_rates", {}))
        model.created_at = self._last_now
        self.trainer.set_model(model)
        self.metrics.model_version.set(model.version)
        log.info("lodestar: checkpoint loaded", extra={"event": "checkpoint_loaded", "version": model.version})
        return True

    def save_checkpoint(self, path: str | Path) -> None:
        checkpoint.write_atomic(path, self.export_checkpoint())

    def load_checkpoint(self, path: str | Path) -> bool:
        try:
            blob = Path(path).read_bytes()
        except OSError as exc:
            self.metrics.checkpoint_refused.inc()
            log.warning("lodestar: checkpoint unreadable: %s", exc, extra={"event": "checkpoint_refused",
                                                                           "error": str(exc)})
            return False
        return self.import_checkpoint(blob)

    def close(self) -> None:
        self.trainer.close()


def learned_shadow(seed: int = 0, **options: Any) -> LearnedPolicy:
    """``learned-shadow``: routes like the fallback, predicts and records what the model would do."""
    options["shadow"] = True
    policy = LearnedPolicy(seed=seed, **options)
    return policy
