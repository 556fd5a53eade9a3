"""`embed evaluate`, `embed compare` and `embed bench evaluate`: option parsing and rich tables only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from embedstore.cli.choices import Level, Postprocess
from embedstore.cli.store_cmd import CacheDir, use_cache_dir

console = Console()



#: Rows of the evaluate table: (metrics.json key, label).
_SUMMARY = (("bpq", "bPQ"), ("bdq", "bDQ"), ("bsq", "bSQ"), ("aji", "AJI"), ("aji_plus", "AJI+"),
            ("dice", "Dice"), ("det_precision", "detection P"), ("det_recall", "detection R"),
            ("det_f1", "detection F1"), ("mpq_image", "mPQ (PanNuke, image mean)"),
            ("mpq_group", "mPQ (PanNuke, group mean)"), ("mpq_plus", "mPQ+ (CoNIC)"), ("r2", "R2"))


def _cell(mean: dict[str, Any], sd: dict[str, Any], key: str) -> str:
    m, s = mean.get(key), sd.get(key)
    if m is None:
        return "-"
    return f"{m:.4f}" if s is None else f"{m:.4f} ± {s:.4f}"


def _seeds(text: Optional[str]) -> Optional[tuple[int, ...]]:
    if text is None:
        return None
    from embedstore.errors import EmbedstoreError

    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise EmbedstoreError(f"--seeds {text!r}: expected comma-separated integers such as 0,1,2") from None


def evaluate_command(
    run: Annotated[Path, typer.Argument(help="Run folder written by `embed train`.")],
    store: Annotated[Optional[str], typer.Option(help="Store to read (default: the one the run was trained on).")] = None,
    split: Annotated[str, typer.Option(help="Split to score.")] = "test",
    postprocess: Annotated[Postprocess, typer.Option(help="cisca (faithful, paper comparisons) | improved | nocut (no direction-map cut; diagnostic).")] = Postprocess.cisca,
    tune_min_size: Annotated[bool, typer.Option(help="Choose the minimum cell size on the run's validation split first.")] = False,
    min_size: Annotated[Optional[int], typer.Option(help="Fixed minimum cell size in pixels (default: the dataset's).")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Subset of the run's seeds, e.g. 0,2 (default: all).")] = None,
    workers: Annotated[int, typer.Option(help="Processes that predict, post-process and score in parallel.")] = 2,
    batch_size: Annotated[int, typer.Option(help="Tiles per decoder forward.")] = 16,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N] for the decoders.")] = "auto",
    cache_dir: CacheDir = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Score every seed's best checkpoint on a split; writes RUN/eval_<split>/ (metrics.json, tiles.csv, classes.csv).

    Where tiles come from larger images, whole images are also stitched, post-processed once and scored.
    """
    from embedstore.trainer.evaluate import evaluate

    use_cache_dir(cache_dir)
    report = evaluate(run, store=store, split=split, postprocess=postprocess.value, tune_min_size=tune_min_size,
                      min_size=min_size, seeds=_seeds(seeds), workers=workers, device=device,
                      batch_size=batch_size, show_progress=not quiet)
    params = report["postprocess"]["params"]
    console.print(f"{run}: {report['n_tiles']} '{split}' tiles, seeds {report['seeds']}, post-processing "
                  f"{params['variant']} (min size {params['min_size']}, {report['postprocess']['min_size_from']})"
                  + (f", {report['missing_tiles']} tiles not extracted" if report["missing_tiles"] else ""))
    levels = [("tile", "tiles")] + ([("image", "stitched images")] if "image" in report else [])
    table = Table("metric", *(f"{name} (mean ± sd)" for _, name in levels))
    for key, label in _SUMMARY:
        if any(report[lv]["mean"].get(key) is not None for lv, _ in levels):
            table.add_row(label, *(_cell(report[lv]["mean"], report[lv]["sd"], key) for lv, _ in levels))
    console.print(table)
    if report["classes"]:
        level = levels[-1][0]
        per_class = Table("class", "PQ+", "PQ (image mean)", "F1", "R2", title=f"per class ({level} level)")
        mean, sd = report[level]["mean"], report[level]["sd"]
        for name in report["classes"]:
            per_class.add_row(name, *(_cell(mean, sd, f"{k}.{name}") for k in ("pq_plus", "pq", "f1", "r2")))
        console.print(per_class)
    console.print(f"wrote {report['out']}")


def compare_command(
    runs: Annotated[list[Path], typer.Argument(help="Run folders and/or folders of runs.")],
    split: Annotated[str, typer.Option(help="Evaluated split to compare.")] = "test",
    level: Annotated[Level, typer.Option(help="auto | tile | image (stitched whole images).")] = Level.auto,
    out: Annotated[Path, typer.Option(help="Folder for comparison.csv, .md and .png.")] = Path("comparison"),
) -> None:
    """Paper-style comparison of evaluated runs (rows encoder x decoder, mean ± sd over seeds)."""
    from embedstore.trainer.compare import compare

    table = compare(list(runs), split=split, level=level.value, out=out)
    view = Table("encoder x decoder", "seeds", *(h for _, h in table.columns),
                 title=f"{table.split} split, {table.level} level")
    for r in table.rows:
        view.add_row(r.label, str(r.n_seeds), *(table.cell(r, k) for k, _ in table.columns))
    console.print(view)
    console.print("wrote " + ", ".join(str(p) for p in table.files.values()))
