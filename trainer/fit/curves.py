"""Training-curve figure of a run: losses, direction-map MAE, 3-class accuracy and learning rate per epoch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice)

PANELS = (
    ("loss", ("train_loss", "val_loss")),
    ("val direction MAE (cell pixels)", ("val_direction_mae",)),
    ("val 3-class accuracy", ("val_accuracy",)),
    ("learning rate", ("lr",)),
)


def plot_curves(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Write a 4-panel PNG from metrics rows (one dict per epoch and seed, as in ``metrics.jsonl``)."""
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2), constrained_layout=True)
    seeds = sorted({int(r["seed"]) for r in rows})
    for ax, (title, keys) in zip(axes, PANELS):
        for seed in seeds:
            mine = [r for r in rows if int(r["seed"]) == seed]
            for key in keys:
                epochs = [int(r["epoch"]) for r in mine if r.get(key) is not None]
                values = [float(r[key]) for r in mine if r.get(key) is not None]
                style = "--" if key.startswith("train") else "-"
                ax.plot(epochs, values, style, label=f"{key} s{seed}" if len(keys) > 1 or len(seeds) > 1 else key)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        if keys == ("lr",) and all(float(r["lr"]) > 0 for r in rows):
            ax.set_yscale("log")
        if len(keys) > 1 or len(seeds) > 1:
            ax.legend(fontsize=6)
    fig.savefig(path, dpi=100)
    plt.close(fig)
