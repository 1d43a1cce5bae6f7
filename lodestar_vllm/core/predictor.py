"""A small MLP ensemble that predicts, per candidate, a correction to the analytic log-TTFT estimate.

Inference is numpy on exported weights (no torch on the request path): one batched pass scores every candidate
with every ensemble head; the heads' spread is the uncertainty. Training uses torch, imported lazily, and only
ever runs in the trainer (off the request path). Heads see different bootstrap weights of the same samples.

Objectives: ``mean`` (squared error on log TTFT), ``quantile`` (pinball loss on log TTFT at ``quantile``,
P99-oriented when set high), ``e2e`` (squared error on log end-to-end latency), ``slo`` (logistic loss on
"TTFT <= slo_ttft_s": the output is the log-odds of missing the target, lower is better).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from lodestar_vllm.core.features import ANALYTIC_COLUMN

_BLAS_LIMIT_ROWS = 32
_CONTROLLER: object | None = None


@contextlib.contextmanager
def _single_thread_blas() -> Iterator[None]:
    global _CONTROLLER
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: without it inference is correct, only slower on big fleets
        yield
        return
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    with _CONTROLLER.limit(limits=1, user_api="blas"):  # type: ignore[attr-defined]
        yield


@dataclass(slots=True)
class ModelWeights:
    mean: np.ndarray  # (F,) input normalisation
    std: np.ndarray  # (F,)
    # Per layer: weights (K, in, out) and biases (K, out), K ensemble heads stacked.
    layers: list[tuple[np.ndarray, np.ndarray]]
    # Training range per feature (out-of-distribution test).
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    objective: str = "mean"
    version: int = 0
    trained_samples: int = 0
    created_at: float = 0.0
    # Held-out loss when accepted (for status and the swap rule).
    holdout_loss: float = math.nan
    extra: dict[str, float] = field(default_factory=dict)
    # float32 copies for inference (built on first use): half the memory traffic of float64.
    _fast: list[tuple[np.ndarray, np.ndarray]] | None = field(default=None, repr=False)

    def fast_layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._fast is None:
            self._fast = [(np.ascontiguousarray(w, dtype=np.float32), np.ascontiguousarray(b, dtype=np.float32))
                          for w, b in self.layers]
        return self._fast

    @property
    def heads(self) -> int:
        return self.layers[0][0].shape[0]

    @property
    def width(self) -> int:
        return self.mean.shape[0]

    def is_finite(self) -> bool:
        return all(np.isfinite(w).all() and np.isfinite(b).all() for w, b in self.layers) and bool(
            np.isfinite(self.mean).all() and np.isfinite(self.std).all())


def residual_base(x: np.ndarray, objective: str) -> np.ndarray:
    """The analytic part of the prediction (raw log seconds); the network only learns the correction."""
    if objective == "slo":
        return np.zeros(x.shape[0])
    return x[:, ANALYTIC_COLUMN]


def predict_heads(weights: ModelWeights, x: np.ndarray) -> np.ndarray:
    """(K, n) outputs: log seconds (mean/quantile/e2e) or log-odds of missing the SLO (slo)."""
    h = ((x - weights.mean) / weights.std).astype(np.float32)
    layers = weights.fast_layers()
    last = len(layers) - 1
    # Tiny matrices: a multi-threaded BLAS only adds hand-off latency (and stalls badly on a busy host).
    with _single_thread_blas() if x.shape[0] >= _BLAS_LIMIT_ROWS else contextlib.nullcontext():
        for i, (w, b) in enumerate(layers):
            h = np.matmul(h, w)
            h += b[:, None, :]
            if i < last:
                np.maximum(h, 0.0, out=h)
    return h[:, :, 0].astype(np.float64) + residual_base(x, weights.objective)


def predict(weights: ModelWeights, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble mean and spread per candidate."""
    out = predict_heads(weights, x)
    return out.mean(axis=0), out.std(axis=0)


def range_distance(weights: ModelWeights, x: np.ndarray, floor: float = 0.5) -> np.ndarray:
    """Per row: how far the furthest feature lies outside the training range, in units of that range
    (at least ``floor``); 0 inside. The out-of-distribution test."""
    if weights.lo is None or weights.hi is None:
        return np.zeros(x.shape[0])
    width = np.maximum(weights.hi - weights.lo, floor)
    outside = np.maximum(np.maximum(weights.lo - x, x - weights.hi), 0.0)
    return (outside / width).max(axis=1)


def loss(objective: str, pred: np.ndarray, target: np.ndarray, quantile: float = 0.9) -> float:
    """Held-out loss in numpy, matching the training loss (targets as in ``fit``)."""
    if pred.size == 0:
        return math.nan
    if objective == "quantile":
        diff = target - pred
        return float(np.mean(np.maximum(quantile * diff, (quantile - 1.0) * diff)))
    if objective == "slo":
        # target 1 = missed the SLO; pred = log-odds of missing
        return float(np.mean(np.logaddexp(0.0, pred) - target * pred))
    return float(np.mean((pred - target) ** 2))


def fit(x: np.ndarray, y: np.ndarray, *, objective: str, hidden: tuple[int, ...], heads: int, steps: int,
        batch_size: int, learning_rate: float, weight_decay: float, seed: int, quantile: float = 0.9,
        init: ModelWeights | None = None, between_steps: Callable[[], None] | None = None) -> ModelWeights:
    """Train an ensemble with torch (lazy import; never called on the request path).

    ``init`` warm-starts from the current model: its first layer is re-expressed under the new
    normalisation, so the function it computes is unchanged before the first step. ``between_steps`` runs
    after every step (the background trainer yields the GIL there).
    """
    import torch

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(seed)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std < 1e-6, 1.0, std)
    base = residual_base(x, objective)
    target = y - base if objective != "slo" else y
    xt = torch.as_tensor((x - mean) / std, dtype=torch.float32)
    yt = torch.as_tensor(target, dtype=torch.float32)
    n, f = xt.shape
    sizes = (f, *hidden, 1)

    params: list[torch.Tensor] = []
    if init is not None and init.width == f and init.heads == heads and \
            [w.shape[2] for w, _ in init.layers] == list(sizes[1:]):
        for i, (w, b) in enumerate(init.layers):
            w = w.copy()
            b = b.copy()
            if i == 0:
                # z_old = (z_new * std_new + mean_new - mean_old) / std_old
                scale = std / init.std
                shift = (mean - init.mean) / init.std
                b = b + np.einsum("f,kfo->ko", shift, w)
                w = w * scale[None, :, None]
            params.append(torch.tensor(w, dtype=torch.float32, requires_grad=True))
            params.append(torch.tensor(b, dtype=torch.float32, requires_grad=True))
    else:
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            bound = 1.0 / math.sqrt(fan_in)
            w = (torch.rand(heads, fan_in, fan_out, generator=gen) * 2 - 1) * bound * math.sqrt(3.0)
            params.append(w.requires_grad_(True))
            params.append(torch.zeros(heads, fan_out, requires_grad=True))
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    # Bootstrap: each head weighs each sample by Poisson(1), a cheap stand-in for resampling.
    boot = torch.poisson(torch.ones(heads, n), generator=gen)
    batch = min(batch_size, n)
    q = quantile
    for _ in range(steps):
        idx = torch.randint(0, n, (batch,), generator=gen)
        h = xt[idx].unsqueeze(0).expand(heads, batch, f)
        for li in range(0, len(params), 2):
            h = torch.baddbmm(params[li + 1].unsqueeze(1), h, params[li])
            if li + 2 < len(params):
                h = torch.relu(h)
        out = h.squeeze(-1)
        tgt = yt[idx].unsqueeze(0)
        wts = boot[:, idx]
        if objective == "quantile":
            diff = tgt - out
            per = torch.maximum(q * diff, (q - 1.0) * diff)
        elif objective == "slo":
            per = torch.nn.functional.binary_cross_entropy_with_logits(out, tgt.expand_as(out), reduction="none")
        else:
            per = (out - tgt) ** 2
        loss_value = (per * wts).sum() / wts.sum().clamp_min(1.0)
        opt.zero_grad(set_to_none=True)
        loss_value.backward()
        opt.step()
        if between_steps is not None:
            between_steps()
    layers = []
    with torch.no_grad():
        for li in range(0, len(params), 2):
            layers.append((params[li].detach().numpy().astype(np.float64),
                           params[li + 1].detach().numpy().astype(np.float64)))
    return ModelWeights(mean=mean, std=std, layers=layers, lo=x.min(axis=0), hi=x.max(axis=0), objective=objective,
                        trained_samples=n)
