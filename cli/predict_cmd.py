"""`embed predict`: options -> :func:`embedstore.trainer.predict.images.predict`, then a summary table."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from embedstore.cli.choices import ObjectType, Postprocess


def predict_command(
    inputs: Annotated[Path, typer.Argument(metavar="IMAGE_OR_DIR", help="An image (png, jpg, tif) or a folder of them, any size.")],
    run: Annotated[Path, typer.Option(help="Training run folder (config.json + seed_<k>/best.safetensors).")],
    out: Annotated[Path, typer.Option(help="Output folder: <stem>_instances.tif, _cells.csv, _cells.geojson, _overlay.png.")] = Path("predictions"),
    weights: Annotated[Optional[str], typer.Option(help="Encoder weights: hub | random | PATH (default: what the run used).")] = None,
    allow_fingerprint_mismatch: Annotated[bool, typer.Option(help="Warn instead of failing when the encoder weights differ from the run's.")] = False,
    seed: Annotated[Optional[int], typer.Option(help="Decoder seed (default: the seed with the best validation loss).")] = None,
    tile: Annotated[Optional[int], typer.Option(help="Tile side in pixels (default: the run's, 256).")] = None,
    stride: Annotated[Optional[int], typer.Option(help="Tile step in pixels; overlaps are blended (default: half the tile).")] = None,
    batch_size: Annotated[int, typer.Option(help="Tiles per forward pass.")] = 8,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N].")] = "auto",
    postprocess: Annotated[Postprocess, typer.Option(help="cisca (reference) | improved | nocut (no direction-map cut).")] = Postprocess.cisca,
    min_size: Annotated[Optional[int], typer.Option(help="Minimum cell area in pixels (default: the dataset's at its magnification).")] = None,
    object_type: Annotated[ObjectType, typer.Option(help="QuPath object type in the GeoJSON: cell | detection.")] = ObjectType.cell,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Segment and classify cells in new images with a trained run.

    Runs the run's frozen encoder and best decoder on overlapping tiles, blends the maps, post-processes
    the whole image once and writes an instance label TIFF, a per-cell CSV, QuPath GeoJSON and an overlay
    PNG per image.
    """
    from embedstore.trainer.predict.images import predict

    console = Console()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summaries = predict(
            run, inputs, out=out, weights=weights, allow_fingerprint_mismatch=allow_fingerprint_mismatch,
            seed=seed, tile=tile, stride=stride, batch_size=batch_size, device=device,
            postprocess=postprocess.value, min_size=min_size, object_type=object_type.value, show_progress=not quiet,
        )
    for warning in caught:
        Console(stderr=True).print(f"[yellow]warning:[/yellow] {warning.message}", highlight=False, soft_wrap=True)
    names = list(summaries[0].class_counts)
    table = Table("image", "size", "tiles", "cells", *names, "seconds")
    for s in summaries:
        table.add_row(s.image.name, f"{s.shape[0]}x{s.shape[1]}", str(s.n_tiles), str(s.n_cells),
                      *(str(s.class_counts[n]) for n in names), f"{s.seconds:.1f}")
    console.print(table)
    console.print(f"wrote {4 * len(summaries)} files to {out}")
