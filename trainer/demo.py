"""The pipeline demo on the embedded default: extract -> train -> evaluate on synthetic tiles (`embed demo`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from embedstore.extract.pipeline import extract_into_store
from embedstore.trainer.evaluate import evaluate
from embedstore.trainer.fit.options import DataOptions
from embedstore.trainer.fit.train import train


def _next_free(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name-2``, ``name-3`` ... when taken (a demo never overwrites an earlier run)."""
    run, n = folder / name, 1
    while run.exists():
        n += 1
        run = folder / f"{name}-{n}"
    return run


def run_demo(out: str | Path = "demo-out", *, tiles: int = 64, tile_size: int = 128, epochs: int = 20,
             say: Callable[[str], Any] = print) -> dict[str, Any]:
    """Extract ``tiles`` synthetic tiles with tiny-vit (random weights), train a lite decoder, evaluate on test.

    The scores show that the pipeline works; they say nothing about real encoders. ``say`` receives one
    line per step (rich markup allowed). Returns the evaluation report (metrics.json content).
    """
    started = time.perf_counter()
    out = Path(out)
    store = out / f"synthetic-{tile_size}.zarr"
    say(f"[bold]1/3 extract[/bold]: {tiles} synthetic {tile_size} px tiles, encoder tiny-vit "
        f"(random weights) -> {store}")
    extract_into_store(store, "tiny-vit", dataset="synthetic", options={"n": tiles}, tile_size=tile_size,
                       weights="random", device="cpu")
    run = _next_free(out, "run")
    say(f"[bold]2/3 train[/bold]: lite decoder, {epochs} epochs -> {run}")
    report = train(store, run, seeds=(0,), decoder="lite", epochs=epochs, data=DataOptions(batch_size=4),
                   device="cpu")
    best = report.seeds[0]
    say(f"best epoch {best.best_epoch}: val loss {best.best_val_loss:.4f}, "
        f"direction MAE on cells {best.val_direction_mae:.3f}, 3-class accuracy {best.val_accuracy:.3f}")
    say("[bold]3/3 evaluate[/bold] on the test split")
    metrics = evaluate(run, split="test", device="cpu")
    mean = metrics["tile"]["mean"]
    say(f"test bPQ {mean['bpq']:.3f}, AJI {mean['aji']:.3f}, detection F1 {mean['det_f1']:.3f}, "
        f"mPQ+ {mean.get('mpq_plus', float('nan')):.3f} -> {metrics['out']}")
    say(f"demo done in {time.perf_counter() - started:.0f} s (pipeline demo: random-weight encoder)")
    return metrics
