"""The online trainer: collects (features, target) samples from outcomes and refits the predictor off the
request path.

Training set = a window of recent samples plus a replay of older regimes (a reservoir per load/prefix bucket,
so a burst of one regime cannot wash out what was learned about the others). The first fit comes early
(``first_fit_samples``), then once the samples doubled, at most every ``refit_every_samples`` new samples
(background mode: also every ``refit_every_s`` seconds when some samples arrived). A fitted model replaces
the current one only if it is finite and no worse on held-out recent samples; rejected fits are counted.

Modes: ``inline`` trains synchronously inside ``add`` when due, counted by samples, so a simulation is
reproducible for a seed; ``background`` trains in a daemon thread (torch with one thread; its ops release the
GIL, so the host's event loop keeps running) and a watchdog restarts the thread if it dies; ``off`` collects
samples and never trains (a checkpoint-only replica).
"""

from __future__ import annotations

import importlib
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lodestar_vllm.core.config import LearnedConfig
from lodestar_vllm.core.predictor import ModelWeights, fit, loss, predict_heads

log = logging.getLogger("lodestar_vllm.trainer")

FitFn = Callable[..., ModelWeights]


@dataclass(slots=True)
class TrainerStats:
    samples_seen: int = 0
    runs: int = 0
    accepted: int = 0
    rejected_worse: int = 0
    rejected_nonfinite: int = 0
    failures: int = 0
    restarts: int = 0
    last_duration_s: float = 0.0
    last_train_samples: int = 0
    last_candidate_loss: float = math.nan
    last_current_loss: float = math.nan
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=32))


class SampleBuffer:
    """Recent window + per-bucket reservoir replay. Bounded: window + buckets x reservoir size."""

    def __init__(self, recent: int, per_bucket: int, seed: int, max_buckets: int = 64) -> None:
        self.recent: deque[tuple[np.ndarray, float, Hashable]] = deque(maxlen=recent)
        self.per_bucket = per_bucket
        self.max_buckets = max_buckets
        self._replay: dict[Hashable, list[tuple[np.ndarray, float]]] = {}
        self._seen: dict[Hashable, int] = {}
        self._rng = random.Random(seed)

    def add(self, x: np.ndarray, y: float, bucket: Hashable) -> None:
        if len(self.recent) == self.recent.maxlen:
            old_x, old_y, old_bucket = self.recent[0]
            self._to_replay((old_x, old_y), old_bucket)
        self.recent.append((x, y, bucket))

    def _to_replay(self, sample: tuple[np.ndarray, float], bucket: Hashable) -> None:
        # The sample leaving the window joins its bucket's reservoir (uniform over everything that left).
        if bucket not in self._replay and len(self._replay) >= self.max_buckets:
            bucket = "other"
        seen = self._seen.get(bucket, 0) + 1
        self._seen[bucket] = seen
        res = self._replay.setdefault(bucket, [])
        if len(res) < self.per_bucket:
            res.append(sample)
        else:
            j = self._rng.randrange(seen)
            if j < self.per_bucket:
                res[j] = sample

    @property
    def replay_size(self) -> int:
        return sum(len(r) for r in self._replay.values())

    def __len__(self) -> int:
        return len(self.recent) + self.replay_size

    def snapshot(self, holdout_fraction: float) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """(train, holdout) sample lists; the holdout is the most recent samples. Cheap: references only, so
        the caller's lock is held for microseconds, not for the array building."""
        recent = list(self.recent)
        n_hold = max(1, int(len(recent) * holdout_fraction))
        train = recent[:-n_hold] + [s for r in self._replay.values() for s in r]
        return train, recent[-n_hold:]

    def dataset(self, holdout_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x_train, y_train, x_holdout, y_holdout) as arrays."""
        return _arrays(*self.snapshot(holdout_fraction))


def _yield_gil() -> None:
    time.sleep(0)


def _finite(value: float) -> float | None:
    """JSON-friendly loss: None instead of inf/nan (status() is served as JSON)."""
    return value if math.isfinite(value) else None


def _arrays(train: list[tuple[Any, ...]], hold: list[tuple[Any, ...]]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (np.stack([s[0] for s in train]), np.array([s[1] for s in train]),
            np.stack([s[0] for s in hold]), np.array([s[1] for s in hold]))


class OnlineTrainer:
    def __init__(self, config: LearnedConfig, seed: int = 0, fit_fn: FitFn | None = None,
                 on_result: Callable[[ModelWeights | None, dict[str, Any]], None] | None = None) -> None:
        self.config = config
        self.seed = seed
        self.mode = config.trainer_mode
        self.fit_fn: FitFn = fit_fn or fit
        # Called after every fit with (new model or None, info incl. "result"); from the trainer's thread in
        # background mode.
        self.on_result = on_result
        self.stats = TrainerStats()
        self.buffer = SampleBuffer(config.recent_window, config.replay_per_bucket, seed)
        self.current: ModelWeights | None = None
        self._lock = threading.Lock()
        self._since_fit = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_fit_at = time.monotonic()
        if self.mode == "background":
            # Import torch now, at start-up: its first import inside the trainer thread holds the GIL for
            # ~100+ ms and would stall the host's event loop once, at the first fit.
            importlib.import_module("torch")
            self._start_thread()

    # --- intake (request path: cheap) --------------------------------------------------------------------
    def add(self, x: np.ndarray, y: float, bucket: Hashable) -> None:
        if not math.isfinite(y) or not np.isfinite(x).all():
            return
        with self._lock:
            self.buffer.add(x, y, bucket)
            self.stats.samples_seen += 1
            self._since_fit += 1
            due = self._due()
        if self.mode == "background":
            self.ensure_running()
        if not due:
            return
        if self.mode == "inline":
            self.train_once()
        elif self.mode == "background":
            self._wake.set()

    def _due(self) -> bool:
        if self.current is None and self.stats.runs == 0:
            return self.stats.samples_seen >= self.config.first_fit_samples
        if self.current is None:
            # Fits so far were rejected: retry at the first-fit cadence.
            return self._since_fit >= self.config.first_fit_samples
        # Early on, refit once the data doubled since the last fit (200 -> 400 -> 800 ...): otherwise a model
        # fitted on the first few hundred samples routes a low-rate trace (Mooncake: ~850 requests in 10 min)
        # for most of its run.
        seen_at_last_fit = self.stats.samples_seen - self._since_fit
        early = max(self.config.first_fit_samples, seen_at_last_fit)
        return self._since_fit >= min(self.config.refit_every_samples, early)

    # --- training ----------------------------------------------------------------------------------------
    def train_once(self) -> bool:
        """One fit + acceptance test. Returns True when the new model replaced the current one."""
        cfg = self.config
        with self._lock:
            if len(self.buffer.recent) < 8:
                return False
            train, hold = self.buffer.snapshot(cfg.holdout_fraction)
            self._since_fit = 0
            run = self.stats.runs
            self.stats.runs += 1
        x_tr, y_tr, x_ho, y_ho = _arrays(train, hold)
        current = self.current
        started = time.perf_counter()
        try:
            candidate = self.fit_fn(
                x_tr, y_tr, objective=cfg.objective, hidden=tuple(cfg.hidden), heads=cfg.ensemble,
                steps=cfg.train_steps if current is None else cfg.warm_train_steps, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                weight_decay=cfg.weight_decay, seed=self.seed * 1_000_003 + run, quantile=cfg.quantile,
                init=current, **self._fit_extras())
        except Exception as exc:  # a broken fit must never take routing down
            self.stats.failures += 1
            log.warning("lodestar trainer: fit failed", extra={"event": "fit_failed", "error": repr(exc)})
            self._report(None, {"run": run, "result": "failed", "error": repr(exc)})
            return False
        duration = time.perf_counter() - started
        self.stats.last_duration_s = duration
        self.stats.last_train_samples = len(y_tr)
        cand_loss = self._holdout_loss(candidate, x_ho, y_ho)
        cur_loss = self._holdout_loss(current, x_ho, y_ho) if current is not None else math.inf
        self.stats.last_candidate_loss = cand_loss
        self.stats.last_current_loss = cur_loss
        info = {"run": run, "train_samples": len(y_tr), "holdout": len(y_ho), "candidate_loss": _finite(cand_loss),
                "current_loss": _finite(cur_loss), "duration_s": round(duration, 4)}
        if not candidate.is_finite() or not math.isfinite(cand_loss):
            self.stats.rejected_nonfinite += 1
            info["result"] = "rejected_nonfinite"
            self.stats.history.append(info)
            log.warning("lodestar trainer: non-finite fit rejected", extra={"event": "fit_rejected", **info})
            self._report(None, info)
            return False
        if cand_loss > cur_loss * (1.0 + cfg.accept_tolerance) + 1e-9:
            self.stats.rejected_worse += 1
            info["result"] = "rejected_worse"
            self.stats.history.append(info)
            log.info("lodestar trainer: fit worse than current, kept current",
                     extra={"event": "fit_rejected", **info})
            self._report(None, info)
            return False
        candidate.version = (current.version if current is not None else 0) + 1
        candidate.holdout_loss = cand_loss
        candidate.trained_samples = self.stats.samples_seen
        self.current = candidate
        self.stats.accepted += 1
        info["result"] = "accepted"
        info["version"] = candidate.version
        self.stats.history.append(info)
        log.info("lodestar trainer: model swapped", extra={"event": "model_swap", **info})
        self._report(candidate, info)
        return True

    def _report(self, model: ModelWeights | None, info: dict[str, Any]) -> None:
        if self.on_result is not None:
            try:
                self.on_result(model, info)
            except Exception:  # noqa: BLE001 - observability must not break training
                log.exception("lodestar trainer: result callback failed")

    def _fit_extras(self) -> dict[str, Any]:
        if self.mode != "background" or self.fit_fn is not fit:
            return {}
        # Hand the GIL to the event loop between steps: the host's loop waits a step, not a switch interval.
        return {"between_steps": _yield_gil}

    def _holdout_loss(self, model: ModelWeights | None, x: np.ndarray, y: np.ndarray) -> float:
        if model is None:
            return math.inf
        with np.errstate(all="ignore"):
            pred = predict_heads(model, x).mean(axis=0)
        return loss(model.objective, pred, y, self.config.quantile)

    def set_model(self, model: ModelWeights) -> None:
        """Install a model from outside (checkpoint warm start)."""
        self.current = model

    # --- background thread -------------------------------------------------------------------------------
    def _start_thread(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="lodestar-trainer", daemon=True)
        self._thread.start()

    def ensure_running(self) -> bool:
        """Watchdog: restart a dead background thread. Returns True when it had to restart."""
        if self.mode != "background" or self._stop.is_set():
            return False
        if self._thread is not None and self._thread.is_alive():
            return False
        self.stats.restarts += 1
        log.warning("lodestar trainer: background thread was dead, restarted",
                    extra={"event": "trainer_restart", "restarts": self.stats.restarts})
        self._start_thread()
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self.config.refit_every_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._lock:
                due = self._due() or (self.current is not None and self._since_fit > 0 and
                                      time.monotonic() - self._last_fit_at >= self.config.refit_every_s)
            if due:
                self._last_fit_at = time.monotonic()
                self.train_once()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10.0)

    def snapshot(self) -> dict[str, Any]:
        s = self.stats
        return {"mode": self.mode, "samples_seen": s.samples_seen, "runs": s.runs, "accepted": s.accepted,
                "rejected_worse": s.rejected_worse, "rejected_nonfinite": s.rejected_nonfinite,
                "failures": s.failures, "restarts": s.restarts, "last_duration_s": round(s.last_duration_s, 4),
                "last_train_samples": s.last_train_samples, "replay_size": self.buffer.replay_size,
                "recent_size": len(self.buffer.recent), "history": list(s.history)[-5:],
                "thread_alive": bool(self._thread is not None and self._thread.is_alive())}
