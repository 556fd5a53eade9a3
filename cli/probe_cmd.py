"""`embed cells` and `embed probe`: option parsing and rich tables only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from embedstore.cli.store_cmd import CacheDir, use_cache_dir
from embedstore.errors import EmbedstoreError

console = Console()

LevelOption = Annotated[str, typer.Option(help="Feature level 0..3, or all.")]


def _levels(text: str) -> Optional[list[int]]:
    """``--level``: ``all`` -> None (every level), ``k`` -> [k]."""
    if text.strip().lower() == "all":
        return None
    try:
        return [int(text)]
    except ValueError:
        raise EmbedstoreError(f"--level {text!r}: expected a level number such as 2, or all") from None


def cells_command(
    store: Annotated[str, typer.Option(help="Store folder, .zip or URL with labels/class and cached features.")],
    encoder: Annotated[str, typer.Option(help="Encoder whose cached features to pool (see `embed info STORE`).")],
    out: Annotated[Path, typer.Option(help="Folder for cells_<split>.npz (one table per split).")],
    level: LevelOption = "all",
    split: Annotated[Optional[list[str]], typer.Option(help="Split to pool; repeat for several (default: every split).")] = None,
    cache_dir: CacheDir = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Pool every labelled cell's tokens (mask-weighted mean per level) into OUT/cells_<split>.npz."""
    import numpy as np

    from embedstore.store import open_store
    from embedstore.trainer.probe.cells import pool_cell_tokens, save_cells

    use_cache_dir(cache_dir)
    opened = open_store(store)
    splits = split or [str(s) for s in np.unique(opened.samples().split)]
    for name in splits:
        table = pool_cell_tokens(opened, encoder, _levels(level), name, show_progress=not quiet)
        path = save_cells(table, out)
        console.print(f"{name}: {len(table)} cells, levels {', '.join(map(str, sorted(table.features)))} -> {path}",
                      highlight=False)


def probe_command(
    cells: Annotated[Path, typer.Option(help="Folder written by `embed cells` (cells_train.npz, cells_test.npz).")],
    level: LevelOption = "all",
    train_split: Annotated[str, typer.Option(help="Split to fit on.")] = "train",
    test_split: Annotated[str, typer.Option(help="Split to score.")] = "test",
) -> None:
    """Fit a class-balanced linear classifier per level on the train cells; print test F1 and balanced accuracy."""
    from embedstore.trainer.probe.cells import load_cells
    from embedstore.trainer.probe.linear import fit_probe

    train, test = load_cells(cells, train_split), load_cells(cells, test_split)
    for k in _levels(level) or sorted(train.features):
        report = fit_probe(train, test, k)
        table = Table(title=f"{train.encoder} level {k}",
                      caption=f"{report['n_train']} {train_split} / {report['n_test']} {test_split} cells")
        table.add_column("class")
        table.add_column("F1", justify="right")
        for name, f1 in report["f1"].items():
            table.add_row(name, "-" if f1 != f1 else f"{f1:.4f}")
        table.add_row("balanced accuracy", f"{report['balanced_accuracy']:.4f}")
        console.print(table)
