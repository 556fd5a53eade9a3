"""Cut images into fixed-size tiles and blend per-tile maps back: the one tile planner and the one blender.

Ingest (``embedstore.datasets``), stitched evaluation and ``embed predict`` all plan tiles with
:func:`grid_origins` and blend per-tile maps with :class:`TileBlender`; ingest cuts tiles with :func:`crop`,
:func:`blend_tiles` from :func:`pad_for_tiles`.

Tile policies (:data:`TilePolicy`), along each axis:

- ``"border"`` (ingest): starts step by ``stride`` from 0 and the last tile is aligned to the border, so
  the axis is covered without padding; an axis shorter than the tile gets the single start 0 (the tile is
  zero-padded by :func:`crop`).
- ``"margin"`` (predict): the grid starts ``(tile - stride) // 2`` pixels before the first pixel (negative
  origins; :func:`pad_for_tiles` mirrors the image there) and runs on until that margin also lies past
  the last pixel, so every pixel sits in the central part of some tile, where the window is large.

Windows (:data:`Window`): ``"uniform"`` weighs every tile pixel 1 (plain mean over the tiles covering a
pixel); ``"spline"`` weighs it by the separable squared-spline window :func:`spline_window`, which falls
smoothly towards the tile edges, so seams between tiles leave no step in the blended maps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from skimage.measure import label

TilePolicy = Literal["border", "margin"]
Window = Literal["uniform", "spline"]
TILE_POLICIES: tuple[str, ...] = ("border", "margin")
WINDOWS: tuple[str, ...] = ("uniform", "spline")


# ----------------------------------------------------------------------------------------------
# planning and cutting


def grid_starts(length: int, size: int, stride: int, policy: TilePolicy = "border") -> list[int]:
    """Start offsets along one axis so that tiles of ``size`` cover ``[0, length)`` (see the module docstring).

    ``"border"``: ``0, stride, 2 stride, ...`` and ``length - size`` last (``[0]`` when ``length <= size``).
    ``"margin"``: ``k * stride - (size - stride) // 2`` for the fewest k that leave that margin past the end.
    """
    if size < 1 or not 1 <= stride <= size:
        raise ValueError(f"tiling needs 1 <= stride ({stride}) <= size ({size})")
    if policy == "border":
        if length <= size:
            return [0]
        starts = list(range(0, length - size + 1, stride))
        if starts[-1] != length - size:
            starts.append(length - size)
        return starts
    if policy == "margin":
        margin = (size - stride) // 2
        n = max(1, math.ceil((length + 2 * margin - size) / stride) + 1)
        return [k * stride - margin for k in range(n)]
    raise ValueError(f"tile policy {policy!r} is not one of {TILE_POLICIES}")


def grid_origins(shape: tuple[int, int], size: int, stride: int,
                 policy: TilePolicy = "border") -> list[tuple[int, int]]:
    """Row-major (y, x) origins of the tiles covering an image of ``shape`` (H, W) (:func:`grid_starts`)."""
    ys = grid_starts(shape[0], size, stride, policy)
    xs = grid_starts(shape[1], size, stride, policy)
    return [(y, x) for y in ys for x in xs]


def crop(array: np.ndarray, origin: tuple[int, int], size: int) -> np.ndarray:
    """The ``size`` x ``size`` window of ``array`` (H, W, ...) at ``origin`` (any y, x, negative too).

    Zeros where the window leaves the image (ingest's border tiles). Returns (size, size, ...) in the
    dtype of ``array``.
    """
    y, x = int(origin[0]), int(origin[1])
    h, w = array.shape[:2]
    if 0 <= y and 0 <= x and y + size <= h and x + size <= w:
        return np.ascontiguousarray(array[y:y + size, x:x + size])
    out = np.zeros((size, size, *array.shape[2:]), dtype=array.dtype)
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + size, h), min(x + size, w)
    if y1 > y0 and x1 > x0:
        out[y0 - y:y1 - y, x0 - x:x1 - x] = array[y0:y1, x0:x1]
    return out


def pad_for_tiles(image: np.ndarray, origins: Sequence[tuple[int, int]], size: int,
                  policy: TilePolicy) -> tuple[np.ndarray, tuple[int, int]]:
    """``image`` (H, W, ...) padded so that every tile of ``origins`` lies inside it, and the padding before.

    ``"margin"`` tiles see the image mirrored at its border without repeating the edge pixel
    (``np.pad`` ``"reflect"``; ``"edge"`` for an image one pixel high or wide); ``"border"`` tiles see zeros
    (as :func:`crop`). Tile ``(y, x)`` is ``padded[y + before[0]:, x + before[1]:][:size, :size]``.
    """
    h, w = image.shape[:2]
    ys, xs = [o[0] for o in origins], [o[1] for o in origins]
    before = (max(0, -min(ys)), max(0, -min(xs)))
    after = (max(0, max(ys) + size - h), max(0, max(xs) + size - w))
    widths = [(before[0], after[0]), (before[1], after[1])] + [(0, 0)] * (image.ndim - 2)
    if policy == "border":
        return np.pad(image, widths, mode="constant"), before
    return np.pad(image, widths, mode="reflect" if min(h, w) > 1 else "edge"), before


def relabel(instance: np.ndarray) -> np.ndarray:
    """Relabel an instance map so that ids are 1..n and every id is one 8-connected piece.

    ``skimage.measure.label`` joins neighbouring pixels only when they hold the same id, so touching
    cells stay apart while the pieces of one cell cut apart by a crop (or by an overlapping annotation)
    become separate instances. 8-connectivity keeps a cell whole across a diagonal-only contact.
    Ids are assigned in raster order of each piece's first pixel.

    Parameters
    ----------
    instance : (H, W) integer array, 0 = background.

    Returns
    -------
    (H, W) int32 array.
    """
    return label(instance, background=0, connectivity=2).astype(np.int32, copy=False)


# ----------------------------------------------------------------------------------------------
# blending


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


def tile_window(shape: tuple[int, int], window: Window) -> np.ndarray:
    """Per-pixel weight of a tile of ``shape`` (h, w): (h, w) float32 (all ones for ``"uniform"``)."""
    if window == "uniform":
        return np.ones(shape, np.float32)
    if window == "spline":
        return np.outer(spline_window(shape[0]), spline_window(shape[1]))
    raise ValueError(f"blending window {window!r} is not one of {WINDOWS}")


class TileBlender:
    """Window-weighted mean of per-tile maps at their origins in an (H, W) image.

    Tiles are (C, h, w) maps of any channel count; their origins may lie anywhere, so a tile may stick
    out of the image (zero-padded border tiles at ingest, reflect-padded margin tiles at predict): the
    part outside is dropped. Each pixel gets ``sum(window * map) / sum(window)`` over the tiles that cover
    it, and pixels that no tile covers get ``fill`` (one value per channel). Memory is
    ``4 * (C + 1) * H * W`` bytes.

    Parameters
    ----------
    shape : (H, W) of the image.
    channels : C, the channels of every tile map.
    window : ``"uniform"`` (plain mean) or ``"spline"`` (:func:`spline_window` squared-spline weights).
    fill : (C,) values of uncovered pixels (default zeros).
    """

    def __init__(self, shape: tuple[int, int], channels: int, window: Window = "uniform",
                 fill: Sequence[float] | np.ndarray | None = None) -> None:
        if window not in WINDOWS:
            raise ValueError(f"blending window {window!r} is not one of {WINDOWS}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.channels = int(channels)
        self.window: Window = window
        self.fill = np.zeros(self.channels, np.float32) if fill is None else np.asarray(fill, np.float32)
        if self.fill.shape != (self.channels,):
            raise ValueError(f"fill needs one value per channel ({self.channels}), got shape {self.fill.shape}")
        self.sums = np.zeros((self.channels, *self.shape), np.float32)
        self.weights = np.zeros(self.shape, np.float32)
        self._windows: dict[tuple[int, int], np.ndarray] = {}

    def add(self, maps: np.ndarray, origin: tuple[int, int]) -> None:
        """Accumulate one tile's (C, h, w) maps whose top-left pixel sits at ``origin`` = (y, x).

        Raises
        ------
        ValueError : wrong channel count, or a tile that covers no pixel of the image.
        """
        if maps.ndim != 3 or maps.shape[0] != self.channels:
            raise ValueError(f"tile maps must be ({self.channels}, h, w), got {maps.shape}")
        size = (int(maps.shape[1]), int(maps.shape[2]))
        y, x = int(origin[0]), int(origin[1])
        y0, x0 = max(y, 0), max(x, 0)
        y1, x1 = min(y + size[0], self.shape[0]), min(x + size[1], self.shape[1])
        if y1 <= y0 or x1 <= x0:
            raise ValueError(f"tile at origin {origin} lies outside the {self.shape} image")
        if size not in self._windows:
            self._windows[size] = tile_window(size, self.window)
        inside = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
        weight = self._windows[size][inside]
        self.sums[:, y0:y1, x0:x1] += maps[(slice(None), *inside)] * weight
        self.weights[y0:y1, x0:x1] += weight

    def add_batch(self, maps: np.ndarray, origins: Sequence[tuple[int, int]] | np.ndarray) -> None:
        """:meth:`add` each of (B, C, h, w) ``maps`` at the matching (B, 2) ``origins``."""
        if len(maps) != len(origins):
            raise ValueError(f"{len(maps)} tile maps but {len(origins)} origins")
        for plane, origin in zip(maps, origins):
            self.add(plane, (int(origin[0]), int(origin[1])))

    def result(self) -> np.ndarray:
        """The blended maps, (C, H, W) float32; ``fill`` where no tile covered a pixel."""
        covered = self.weights > 0
        out = np.empty_like(self.sums)
        out[:] = self.fill[:, None, None]
        np.divide(self.sums, self.weights, out=out, where=covered)
        return out


def blend_tiles(tile_fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray, tile: int, stride: int,
                channels: int, *, policy: TilePolicy = "margin", window: Window = "spline", batch_size: int = 8,
                advance: Callable[[int], None] | None = None) -> np.ndarray:
    """Run ``tile_fn`` on batches of tiles of ``image`` and blend its outputs into whole-image maps.

    Tiles are planned by :func:`grid_origins` with ``policy`` and cut from :func:`pad_for_tiles`.

    Parameters
    ----------
    tile_fn : (B, tile, tile, ...) tiles -> (B, channels, tile, tile) float maps.
    image : (H, W, ...) array.
    advance : called with the number of tiles done after each batch (progress bars).

    Returns
    -------
    (channels, H, W) float32.
    """
    origins = grid_origins(image.shape[:2], tile, stride, policy)
    padded, (dy, dx) = pad_for_tiles(image, origins, tile, policy)
    blender = TileBlender(image.shape[:2], channels, window)
    for start in range(0, len(origins), batch_size):
        batch = origins[start:start + batch_size]
        tiles = np.stack([padded[y + dy:y + dy + tile, x + dx:x + dx + tile] for y, x in batch])
        blender.add_batch(tile_fn(tiles), batch)
        if advance is not None:
            advance(len(batch))
    return blender.result()
