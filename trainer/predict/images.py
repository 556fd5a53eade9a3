"""`embed predict`: segment and classify cells on new images of any size with a trained run.

Large images follow CISCA (research notes cisca.md §4): the image is cut into overlapping tiles (256 px,
stride 128), the frozen encoder and the decoder run tile by tile in batches, and each output map
(3-class and type probabilities, direction maps) is blended with a separable squared-spline window and
normalised by the summed window weights (:func:`embedstore.imaging.tiling.blend_tiles`, policy
``"margin"``, window ``"spline"``). Post-processing then runs **once** on the stitched maps, so cells
crossing tile borders are neither cut nor counted twice.

Padding. The tile grid starts ``(tile - stride) // 2`` pixels before the first row and column (and
reaches at least that far past the last), the image reflected there, so every image pixel lies in the
central part of some tile, where the window is large; a constant map stitches back to the same constant
whatever the stride.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedstore.datasets.readers import PICTURE_SUFFIXES, list_files, read_image
from embedstore.errors import EmbedstoreError
from embedstore.imaging.tiling import blend_tiles, grid_origins
from embedstore.progress import progress_bar
from embedstore.trainer.inference.maps import TileMaps
from embedstore.trainer.postprocess import PostprocessParams, cells_from_maps
from embedstore.trainer.predict.export import (
    OBJECT_TYPES,
    Cell,
    cell_records,
    write_cells_csv,
    write_geojson,
    write_label_tiff,
    write_overlay,
)
from embedstore.trainer.predict.run_model import RunModel, load_run_model


def check_tiling(tile: int, stride: int) -> None:
    """Refuse a tile size or stride the planner cannot use, naming the option (before any image is read)."""
    if tile < 1 or not 1 <= stride <= tile:
        raise EmbedstoreError(f"--stride {stride} must lie in 1..{tile} (the tile size) and the tile size must be "
                              "positive")


def predict_image_maps(model: RunModel, image: np.ndarray, *, tile: int = 256, stride: int = 128,
                       batch_size: int = 8, advance: Callable[[int], None] | None = None) -> TileMaps:
    """The run's maps over a whole (H, W, 3) uint8 image, tiles blended (see the module docstring).

    Returns
    -------
    TileMaps with (3, H, W) contour probabilities, (4, H, W) directions and (n_types + 1, H, W) type
    probabilities (None without a type head), float32.
    """
    maps = blend_tiles(model, image, tile, stride, model.channels, policy="margin", window="spline",
                       batch_size=batch_size, advance=advance)
    return TileMaps.from_planes(maps)

@dataclass(frozen=True)
class ImageSummary:
    """What ``predict`` did for one image: size, cells per class, files written, time."""

    image: Path
    shape: tuple[int, int]
    n_tiles: int
    n_cells: int
    class_counts: dict[str, int]
    files: dict[str, Path]
    seconds: float


def list_images(inputs: str | Path) -> list[Path]:
    """An image file, or the png/jpg/tif images of a folder in natural order (not recursive)."""
    path = Path(inputs)
    if path.is_dir():
        images = list(list_files(path, PICTURE_SUFFIXES).values())
        if not images:
            raise EmbedstoreError(f"{path}: no images ({', '.join(PICTURE_SUFFIXES)}) in this folder")
        return images
    if not path.exists():
        raise EmbedstoreError(f"{path}: no such image file or folder")
    if path.suffix.lower() not in PICTURE_SUFFIXES:
        raise EmbedstoreError(f"{path}: not a supported image ({', '.join(PICTURE_SUFFIXES)})")
    return [path]


def predict(run: str | Path, inputs: str | Path, *, out: str | Path = "predictions",
            weights: str | Path | None = None, allow_fingerprint_mismatch: bool = False, seed: int | None = None,
            tile: int | None = None, stride: int | None = None, batch_size: int = 8, device: str = "auto",
            postprocess: str = "cisca", min_size: int | None = None, object_type: str = "cell",
            show_progress: bool = True) -> list[ImageSummary]:
    """Segment and classify cells in new images with a trained run; write four files per image.

    Per image ``<stem>`` in ``out``: ``<stem>_instances.tif`` (int32 instance ids, image size),
    ``<stem>_cells.csv`` (id, class, class_name, centroid_y, centroid_x, area, class_probability),
    ``<stem>_cells.geojson`` (QuPath cell objects with classification, see
    :func:`embedstore.trainer.predict.export.geojson_features`) and ``<stem>_overlay.png`` (outlines coloured by class).

    Parameters
    ----------
    run : training run folder.
    inputs : an image file (png, jpg, tif) or a folder of them, any size.
    weights : encoder weights (see :func:`~embedstore.trainer.predict.run_model.load_run_model`); their
        fingerprint must match the run's unless ``allow_fingerprint_mismatch``.
    seed : decoder seed; None = the seed with the best validation loss.
    tile, stride : tiling of the images; None = the run's tile size (256) and half of it (CISCA's 128).
    batch_size : tiles per encoder + decoder forward pass.
    postprocess : variant of :func:`embedstore.trainer.postprocess.instances_from_maps`.
    min_size : minimum cell area in pixels; None = the dataset default at the run's magnification.
    object_type : QuPath object type of the GeoJSON features, ``"cell"`` or ``"detection"``.

    Raises
    ------
    EmbedstoreError : missing or unreadable images, a folder without a run or checkpoints, a weights
        fingerprint that differs from the run's, bad options.
    """
    images = list_images(inputs)
    if batch_size < 1:
        raise EmbedstoreError(f"--batch-size {batch_size}: must be >= 1")
    if object_type not in OBJECT_TYPES:
        raise EmbedstoreError(f"--object-type {object_type!r}: expected {' or '.join(map(repr, OBJECT_TYPES))}")
    model = load_run_model(run, weights=weights, seed=seed, device=device,
                           allow_fingerprint_mismatch=allow_fingerprint_mismatch)
    tile = model.decoder.tile_size if tile is None else tile
    stride = max(1, tile // 2) if stride is None else stride
    check_tiling(tile, stride)
    params = PostprocessParams.for_dataset(model.dataset.get("magnification", "40x"), min_size=min_size,
                                           variant=postprocess, dataset_name=model.dataset.get("name"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for path in images:
        start = time.perf_counter()
        image = read_image(path)
        n_tiles = len(grid_origins(image.shape[:2], tile, stride, policy="margin"))
        with progress_bar(f"predict {path.name}", total=n_tiles, unit="tiles", enabled=show_progress) as advance:
            maps = predict_image_maps(model, image, tile=tile, stride=stride, batch_size=batch_size, advance=advance)
        cells = cells_from_maps(maps.contour, maps.directions, maps.types, params)
        instances, per_instance = cells.instances, cells.per_instance
        cells = cell_records(instances, per_instance, model.class_names)
        files = _write_outputs(out, path.stem, image, instances, cells, object_type)
        counts = {name: sum(c.class_id == k for c in cells) for k, name in enumerate(model.class_names, start=1)}
        summaries.append(ImageSummary(image=path, shape=(image.shape[0], image.shape[1]), n_tiles=n_tiles,
                                      n_cells=len(cells), class_counts=counts, files=files,
                                      seconds=time.perf_counter() - start))
    return summaries


def _write_outputs(out: Path, stem: str, image: np.ndarray, instances: np.ndarray, cells: list[Cell],
                   object_type: str) -> dict[str, Path]:
    files = {"instances": out / f"{stem}_instances.tif", "cells": out / f"{stem}_cells.csv",
             "geojson": out / f"{stem}_cells.geojson", "overlay": out / f"{stem}_overlay.png"}
    write_label_tiff(files["instances"], instances)
    write_cells_csv(files["cells"], cells)
    write_geojson(files["geojson"], instances, cells, stem, object_type)
    write_overlay(files["overlay"], image, instances, cells)
    return files
