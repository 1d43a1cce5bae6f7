"""One figure comparing workloads: prompt and output length CDFs, and load over time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lodestar_vllm.workloads.types import WorkloadRequest

WINDOW_S = 30.0


def plot_workloads(workloads: dict[str, list[WorkloadRequest]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # matplotlib comes with the bench extra
        raise RuntimeError("plotting needs matplotlib: pip install 'lodestar-vllm[bench]'") from exc
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, requests in workloads.items():
        for ax, values in zip(
            axes[:2], ([r.prompt_tokens for r in requests], [r.output_tokens for r in requests]), strict=True
        ):
            xs = np.sort(values)
            ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=name)
        arrivals = np.array([r.arrival_time for r in requests])
        counts = np.bincount((arrivals // WINDOW_S).astype(int))
        axes[2].plot(np.arange(len(counts)) * WINDOW_S, counts / WINDOW_S, label=name, linewidth=0.8)
    for ax, title in zip(axes[:2], ("prompt tokens", "output tokens"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel(title)
        ax.set_ylabel("CDF")
        ax.grid(alpha=0.3)
    axes[2].set_xlabel("time (s)")
    axes[2].set_ylabel(f"requests/s ({WINDOW_S:.0f} s windows)")
    axes[2].grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
