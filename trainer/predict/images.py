"""`embed predict`: segment and classify cells on new images of any size with a trained run.

Large images follow CISCA (research notes cisca.md §4): the image is padded and cut into overlapping tiles
(256 px, stride 128), the frozen encoder and the decoder run tile by tile in batches, and each output map
(3-class and type probabilities, direction maps) is blended with a separable squared-spline window and
normalised by the summed window weights. Post-processing then runs **once** on the stitched maps, so
cells crossing tile borders are neither cut nor counted twice.

Padding. The image is reflected by ``(tile - stride) // 2`` pixels before its first row and column (and
at least that much after its last), so every image pixel lies in the central part of some tile, where
the window is large; a constant map stitches back to the same constant whatever the stride.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from embedstore.datasets.readers import list_files, read_image
from embedstore.encoders import EncoderSpec, FrozenEncoder, build_encoder, get_spec
from embedstore.errors import EmbedstoreError
from embedstore.progress import progress_bar
from embedstore.trainer.model.checkpoint import read_metadata
from embedstore.trainer.predict.export import (
    Cell,
    cell_records,
    write_cells_csv,
    write_geojson,
    write_label_tiff,
    write_overlay,
)
from embedstore.trainer.inference.maps import LoadedRun, TileMaps, checkpoint_path, load_run, predict_maps, read_config
from embedstore.trainer.postprocess.instances import PostprocessParams, classify_instances, instances_from_maps

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Name of the single class of runs trained without cell types.
UNTYPED_CLASS = "Cell"


# ----------------------------------------------------------------------------------------------
# tiling and blending


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one image lie.

    Attributes
    ----------
    shape : (H, W) of the image.
    tile, stride : tile side and step in pixels.
    margin : padding before the first row / column; the image starts at (margin, margin) of the padded one.
    padded : (H', W') of the padded image, covered exactly by the tiles.
    origins : (N, 2) int64 top-left (y, x) of every tile in padded coordinates, row-major.
    """

    shape: tuple[int, int]
    tile: int
    stride: int
    margin: int
    padded: tuple[int, int]
    origins: np.ndarray = field(repr=False)


def tile_grid(shape: tuple[int, int], tile: int = 256, stride: int = 128) -> TileGrid:
    """Plan the overlapping tiles that cover an image of ``shape`` (H, W) after padding."""
    if tile < 1 or not 1 <= stride <= tile:
        raise EmbedstoreError(f"--stride {stride} must lie in 1..{tile} (the tile size) and the tile size must be positive")
    margin = (tile - stride) // 2
    starts, padded = [], []
    for length in shape:
        n = max(1, math.ceil((length + 2 * margin - tile) / stride) + 1)
        starts.append(np.arange(n) * stride)
        padded.append((n - 1) * stride + tile)
    ys, xs = np.meshgrid(*starts, indexing="ij")
    origins = np.stack([ys.ravel(), xs.ravel()], axis=1).astype(np.int64)
    return TileGrid(shape=(int(shape[0]), int(shape[1])), tile=tile, stride=stride, margin=margin,
                    padded=(padded[0], padded[1]), origins=origins)


def pad_image(image: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(H, W, ...) image reflected at its borders to ``grid.padded``, (H', W', ...) same dtype."""
    m = grid.margin
    after = (grid.padded[0] - grid.shape[0] - m, grid.padded[1] - grid.shape[1] - m)
    widths = [(m, after[0]), (m, after[1])] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, widths, mode="reflect" if min(image.shape[:2]) > 1 else "edge")


def spline_window(size: int) -> np.ndarray:
    """Squared-spline window of ``size`` samples, (size,) float32 in (0, 1].

    Over the tile position t in (0, 1) (pixel centres), with the triangle ``a = 1 - |2t - 1|``:
    ``2 a^2`` for ``a < 1/2`` and ``1 - 2 (1 - a)^2`` above: smooth, 1 at the centre, near 0 (never 0)
    at the edges, and two copies half a window apart sum to 1.
    """
    t = (np.arange(size, dtype=np.float64) + 0.5) / size
    a = 1.0 - np.abs(2.0 * t - 1.0)
    w = np.where(a < 0.5, 2.0 * a * a, 1.0 - 2.0 * (1.0 - a) ** 2)
    return w.astype(np.float32)


class Stitcher:
    """Accumulate window-weighted tile maps into whole-image maps.

    Holds ``channels`` float32 planes of the padded size plus the summed weights; :meth:`result` divides
    and crops the padding, so memory is about ``4 * (channels + 1) * H' * W'`` bytes.
    """

    def __init__(self, grid: TileGrid, channels: int) -> None:
        self.grid = grid
        w = spline_window(grid.tile)
        self.window = np.outer(w, w)
        self.sums = np.zeros((channels, *grid.padded), np.float32)
        self.weights = np.zeros(grid.padded, np.float32)

    def add(self, maps: np.ndarray, origins: np.ndarray) -> None:
        """Add tile maps (B, C, tile, tile) float whose top-left corners are ``origins`` (B, 2)."""
        t = self.grid.tile
        for plane, (y, x) in zip(maps, origins):
            self.sums[:, y:y + t, x:x + t] += plane * self.window
            self.weights[y:y + t, x:x + t] += self.window

    def result(self) -> np.ndarray:
        """Blended maps of the image, (C, H, W) float32 (the padding cropped)."""
        m = self.grid.margin
        h, w = self.grid.shape
        return self.sums[:, m:m + h, m:m + w] / self.weights[m:m + h, m:m + w]


def blend_tiles(tile_fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray, grid: TileGrid, channels: int,
                batch_size: int = 8, advance: Callable[[int], None] | None = None) -> np.ndarray:
    """Run ``tile_fn`` on batches of tiles of ``image`` and blend its outputs into whole-image maps.

    Parameters
    ----------
    tile_fn : (B, tile, tile, ...) tiles -> (B, channels, tile, tile) float maps.
    image : (H, W, ...) array tiled as planned by ``grid``.
    advance : called with the number of tiles done after each batch (progress bars).

    Returns
    -------
    (channels, H, W) float32.
    """
    padded = pad_image(image, grid)
    stitcher = Stitcher(grid, channels)
    t = grid.tile
    for start in range(0, len(grid.origins), batch_size):
        origins = grid.origins[start:start + batch_size]
        tiles = np.stack([padded[y:y + t, x:x + t] for y, x in origins])
        stitcher.add(tile_fn(tiles), origins)
        if advance is not None:
            advance(len(origins))
    return stitcher.result()


# ----------------------------------------------------------------------------------------------
# the run: decoder checkpoint and encoder


@dataclass(frozen=True)
class RunModel:
    """A run's frozen encoder and one seed's decoder: uint8 tiles in, stitched-ready maps out."""

    encoder: FrozenEncoder
    decoder: LoadedRun
    fingerprint_matches: bool

    @property
    def seed(self) -> int:
        return self.decoder.seeds[0]

    @property
    def dataset(self) -> dict:
        """The run's dataset facts (name, magnification, classes ...)."""
        return dict(self.decoder.config.get("dataset", {}))

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of classes 1..K; ``(UNTYPED_CLASS,)`` for runs without a type head."""
        n = self.decoder.n_types
        if n == 0:
            return (UNTYPED_CLASS,)
        names = tuple(self.dataset.get("classes", ()))
        return names if len(names) == n else tuple(f"Class {k}" for k in range(1, n + 1))

    @property
    def channels(self) -> int:
        """Stitched channels: 3 contour probabilities, 4 direction maps, then n_types + 1 type probabilities."""
        n = self.decoder.n_types
        return 7 + (n + 1 if n else 0)

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 tiles -> (B, channels, S, S) float32: contour softmax, directions, type softmax.

        The encoder runs under fp16 autocast on CUDA (as extraction does by default), the decoder in fp32.
        """
        images = torch.from_numpy(np.ascontiguousarray(tiles))
        device = self.decoder.device
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            levels = self.encoder(images)
        used = [levels[k] for k in self.decoder.levels]
        maps = predict_maps(self.decoder.models, used, tiles, device)[0]
        planes = [np.stack([m.contour for m in maps]), np.stack([m.directions for m in maps])]
        if self.decoder.n_types:
            planes.append(np.stack([m.types for m in maps]))
        return np.concatenate(planes, axis=1)


def choose_seed(run: str | Path, seed: int | None = None) -> int:
    """The seed whose best checkpoint ``predict`` uses.

    ``seed=None`` takes the seed whose ``best.safetensors`` records the lowest validation loss; seeds
    without a recorded loss rank last and ties go to the earlier seed of the run (so a one-seed run
    uses its seed, usually 0). Only seeds with a best checkpoint count.

    Raises
    ------
    EmbedstoreError : no run, no checkpoint at all, or ``seed`` is not a seed of the run with a checkpoint.
    """
    config = read_config(run)
    trained = [int(s) for s in config.get("seeds", ()) if (Path(run) / f"seed_{s}" / "best.safetensors").is_file()]
    if not trained:
        raise EmbedstoreError(f"--run {run}: no seed_<k>/best.safetensors checkpoint (has the run finished an epoch?)")
    if seed is not None:
        if seed not in trained:
            raise EmbedstoreError(f"--seed {seed}: {run} has best checkpoints for seeds {trained}")
        return seed

    def loss(s: int) -> float:
        value = read_metadata(checkpoint_path(run, s)).get("val_loss")
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.inf

    return min(trained, key=loss)


def _encoder_weights(weights: str | Path | None, recorded: str | None) -> tuple[str | Path, int]:
    """(weights argument, seed) for ``build_encoder``; ``None`` means what the run recorded."""
    was_random = bool(recorded and recorded.startswith("random:"))
    random_seed = int(recorded.split(":", 1)[1]) if was_random and recorded else 0
    if weights is None:
        return ("random" if was_random else "hub"), random_seed
    return weights, random_seed


def load_run_model(run: str | Path, *, weights: str | Path | None = None, seed: int | None = None,
                   device: str = "auto", allow_fingerprint_mismatch: bool = False) -> RunModel:
    """Build a run's encoder and load one seed's best decoder.

    Parameters
    ----------
    run : training run folder (``config.json`` + ``seed_<k>/best.safetensors``).
    weights : encoder weights: ``"hub"``, ``"random"`` (seeded as the run recorded, ``random:<seed>``), a
        weights file, or None for what the run used (random when its fingerprint is ``random:<seed>``,
        otherwise the hub).
    seed : decoder seed; None = best validation loss (see :func:`choose_seed`).
    allow_fingerprint_mismatch : warn instead of failing when the encoder's weights fingerprint differs
        from the one the run's features were extracted with.

    Raises
    ------
    EmbedstoreError : no run or checkpoint, unavailable weights, or a fingerprint mismatch (unless allowed).
    """
    chosen = choose_seed(run, seed)
    decoder = load_run(run, seeds=(chosen,), device=device)
    config = decoder.config
    spec_data = config.get("encoder")
    spec = EncoderSpec.from_dict(spec_data) if spec_data else get_spec(str(config.get("encoder_key", "")))
    recorded = config.get("encoder_fingerprint")
    weights_arg, random_seed = _encoder_weights(weights, recorded)
    encoder = build_encoder(spec, weights_arg, seed=random_seed, device=decoder.device)
    matches = encoder.fingerprint == recorded
    if not matches:
        message = (f"encoder {spec.key!r} weights have fingerprint {encoder.fingerprint}, but run {run} was "
                   f"trained on features extracted with {recorded}")
        if not allow_fingerprint_mismatch:
            raise EmbedstoreError(f"{message}; pass the weights it used or --allow-fingerprint-mismatch")
        warnings.warn(message, stacklevel=2)
    return RunModel(encoder=encoder, decoder=decoder, fingerprint_matches=matches)


# ----------------------------------------------------------------------------------------------
# whole images


def predict_image_maps(model: RunModel, image: np.ndarray, *, tile: int = 256, stride: int = 128,
                       batch_size: int = 8, advance: Callable[[int], None] | None = None) -> TileMaps:
    """The run's maps over a whole (H, W, 3) uint8 image, tiles blended (see the module docstring).

    Returns
    -------
    TileMaps with (3, H, W) contour probabilities, (4, H, W) directions and (n_types + 1, H, W) type
    probabilities (None without a type head), float32.
    """
    grid = tile_grid(image.shape[:2], tile, stride)
    maps = blend_tiles(model, image, grid, model.channels, batch_size, advance)
    return TileMaps(contour=maps[:3], directions=maps[3:7], types=maps[7:] if len(maps) > 7 else None)


def cells_from_maps(maps: TileMaps, params: PostprocessParams) -> tuple[np.ndarray, dict[int, tuple[int, float]]]:
    """Instances (H, W) int32 and id -> (class id, mean class probability) from stitched maps.

    Runs without a type head give every instance class 1 with the mean foreground probability
    (boundary + body) as its probability.
    """
    instances = instances_from_maps(maps.contour, maps.directions, params)
    if maps.types is not None:
        return instances, classify_instances(instances, maps.types)[1]
    flat = instances.ravel()
    area = np.bincount(flat)
    fg = np.bincount(flat, weights=(maps.contour[0] + maps.contour[1]).ravel(), minlength=area.size)
    return instances, {int(i): (1, float(fg[i] / area[i])) for i in np.flatnonzero(area) if i > 0}


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
        images = list(list_files(path, IMAGE_SUFFIXES).values())
        if not images:
            raise EmbedstoreError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return images
    if not path.exists():
        raise EmbedstoreError(f"{path}: no such image file or folder")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise EmbedstoreError(f"{path}: not a supported image ({', '.join(IMAGE_SUFFIXES)})")
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
    weights : encoder weights (see :func:`load_run_model`); their fingerprint must match the run's
        unless ``allow_fingerprint_mismatch``.
    seed : decoder seed; None = the seed with the best validation loss.
    tile, stride : tiling of the images; None = the run's tile size (256) and half of it (CISCA's 128).
    batch_size : tiles per encoder + decoder forward pass.
    postprocess : variant of :func:`embedstore.trainer.postprocess.instances.instances_from_maps`.
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
    if object_type not in ("cell", "detection"):
        raise EmbedstoreError(f"--object-type {object_type!r}: expected 'cell' or 'detection'")
    model = load_run_model(run, weights=weights, seed=seed, device=device,
                           allow_fingerprint_mismatch=allow_fingerprint_mismatch)
    tile = model.decoder.tile_size if tile is None else tile
    stride = max(1, tile // 2) if stride is None else stride
    tile_grid((tile, tile), tile, stride)  # validates tile and stride before any image is read
    params = PostprocessParams.for_dataset(model.dataset.get("magnification", "40x"), min_size=min_size,
                                           variant=postprocess, dataset_name=model.dataset.get("name"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for path in images:
        start = time.perf_counter()
        image = read_image(path)
        n_tiles = len(tile_grid(image.shape[:2], tile, stride).origins)
        with progress_bar(f"predict {path.name}", total=n_tiles, unit="tiles", enabled=show_progress) as advance:
            maps = predict_image_maps(model, image, tile=tile, stride=stride, batch_size=batch_size, advance=advance)
        instances, per_instance = cells_from_maps(maps, params)
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
