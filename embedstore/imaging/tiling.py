"""Cut source images into fixed-size tiles: grid origins, zero-padded crops and per-tile relabelling."""

from __future__ import annotations

import numpy as np
from skimage.measure import label


def grid_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets along one axis so that tiles of ``size`` cover ``[0, length)``.

    Starts step by ``stride``; the last tile is aligned to the border (start ``length - size``) so the
    whole axis is covered without padding. An axis shorter than the tile gets the single start 0 and is
    zero-padded by :func:`crop`.
    """
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def grid_origins(shape: tuple[int, int], size: int, stride: int) -> list[tuple[int, int]]:
    """Row-major (y, x) origins of the tiles covering an image of ``shape`` (H, W)."""
    return [(y, x) for y in grid_starts(shape[0], size, stride) for x in grid_starts(shape[1], size, stride)]


def crop(array: np.ndarray, origin: tuple[int, int], size: int) -> np.ndarray:
    """The ``size`` x ``size`` window of ``array`` (H, W, ...) at ``origin``; zeros where it leaves the image."""
    y, x = origin
    window = array[y : y + size, x : x + size]
    if window.shape[:2] == (size, size):
        return np.ascontiguousarray(window)
    out = np.zeros((size, size, *array.shape[2:]), dtype=array.dtype)
    out[: window.shape[0], : window.shape[1]] = window
    return out


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
