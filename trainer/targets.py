"""Training targets derived from an instance label map: the CISCA 3-class map, 4 direction maps, weights.

All targets are pure functions of the label map (and the class map), so they can be recomputed after any
crop or dihedral view; ``embedstore.trainer.augment`` transforms them without recomputation and the two
agree exactly. Conventions follow CISCA (vadori/cytoark, ``generate_graymask4`` and
``dir_distance_map_fullrange``); the few deliberate deviations are documented where they are made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.morphology import (diamond, disk, footprint_rectangle, octagon, remove_small_holes,
                                remove_small_objects)

from embedstore.errors import EmbedstoreError

BOUNDARY, BODY, BACKGROUND = 0, 1, 2
_GAP = 3  # background squeezed between or inside cells; only used while building the map
_FULL = np.ones((3, 3), dtype=bool)  # 8-connectivity

_Footprint = tuple[tuple[np.ndarray, int], ...]  # skimage footprint sequence: apply each (3x3, repeats)


@dataclass(frozen=True)
class _Footprints:
    """Magnification-dependent structuring elements and size thresholds of the 3-class map."""

    gap: _Footprint  # closing that finds background squeezed between cells
    near: _Footprint  # reach within which another cell makes a pixel "touching"
    near_wide: _Footprint  # wider reach, for thin near-contact zones
    erode: _Footprint  # erosion that thin near-contact zones do not survive
    grow: tuple[tuple[int, _Footprint], ...]  # (fragments below this size, dilate them by this)
    hole_below: int  # holes of the boundary mask smaller than this are filled


def _square(n: int) -> _Footprint:
    return footprint_rectangle((n, n), decomposition="sequence")


def _diamond(r: int) -> _Footprint:
    return diamond(r, decomposition="sequence")


# The 40x elements are the MATLAB strel('disk', r) shapes the reference writes out: disk 2 = diamond(2),
# disk 5 = 9x9 octagon(5, 2), disk 6 = 11x11 octagon(7, 2). All are D4-symmetric, which keeps the map
# exactly equivariant under the dihedral views. They are kept as exact sequences of 3x3 elements (faster).
_FOOTPRINTS = {
    20: _Footprints(gap=_square(5), near=_square(3), near_wide=_square(5), erode=_square(3),
                    grow=((2, _square(3)), (4, _diamond(1))), hole_below=3),
    40: _Footprints(gap=octagon(5, 2, decomposition="sequence"), near=_diamond(2),
                    near_wide=octagon(7, 2, decomposition="sequence"), erode=_square(5),
                    grow=((6, _diamond(2)), (11, _square(3))), hole_below=8),
}


@dataclass(frozen=True)
class Targets:
    """Per-tile training targets.

    Attributes
    ----------
    contour : (H, W) uint8 in {BOUNDARY, BODY, BACKGROUND}.
    directions : (4, H, W) float32 in [-1, 1], channels (h, v, tl, bl), 0 on background.
    weight : (H, W) float32 regression weight (1 near cells, ``low`` elsewhere).
    types : (H, W) uint8 class map (0 = background), or None when the dataset has no classes.
    """

    contour: np.ndarray
    directions: np.ndarray
    weight: np.ndarray
    types: np.ndarray | None = None


def compute_targets(instance: np.ndarray, cls: np.ndarray | None = None,
                    magnification: str | float = "40x") -> Targets:
    """All targets of one tile.

    Parameters
    ----------
    instance : (H, W) integer instance ids, 0 = background; each id should be one connected cell
        (relabel with ``skimage.measure.label`` after cropping if pieces may have been cut apart).
    cls : (H, W) integer class map with values in 0..255 (0 = background), or None.
    magnification : "20x", "40x" or a number; selects the 3-class map's structuring elements.
    """
    labels = _as_instance_map(instance)
    types = None
    if cls is not None:
        cls = np.asarray(cls)
        if cls.shape != labels.shape:
            raise EmbedstoreError(f"class map shape {cls.shape} differs from instance map shape {labels.shape}")
        if cls.size and (cls.min() < 0 or cls.max() > 255):
            raise EmbedstoreError(f"class map values must lie in 0..255, got {cls.min()}..{cls.max()}")
        types = cls.astype(np.uint8)
    return Targets(contour=three_class_map(labels, magnification), directions=direction_maps(labels),
                   weight=regression_weight(labels), types=types)


def three_class_map(instance: np.ndarray, magnification: str | float = "40x") -> np.ndarray:
    """CISCA "graymask4" map: boundary only where cells touch or nearly touch, body, background.

    Follows the reference algorithm step by step, but finds the pixels near another cell with one grey
    dilation and one grey erosion of the label map instead of one dilation per cell. Gap pixels
    (background squeezed between cells) are returned as background. Outside the tile counts as neutral
    for every dilation and erosion, which equals the reference's reflect padding for these convex
    symmetric footprints. The reference's step that turns tiny background islands into gap is left out:
    as written, its mask is disjoint from the background, so it never changes the map.

    Parameters
    ----------
    instance : (H, W) integer instance ids, 0 = background.
    magnification : "20x", "40x" or a number (< 30 picks the 20x footprints, else 40x).

    Returns
    -------
    (H, W) uint8 in {BOUNDARY=0, BODY=1, BACKGROUND=2}.
    """
    labels = _as_instance_map(instance)
    fp = _FOOTPRINTS[_magnification_table(magnification)]
    cells = labels > 0

    gap = ~cells & _erode(_dilate(cells, fp.gap), fp.gap)
    out = np.full(labels.shape, BODY, dtype=np.uint8)
    out[~cells] = BACKGROUND
    out[gap] = _GAP

    touching = _fill_holes(_near_another_cell(labels, fp.near), fp.hole_below)
    for below, footprint in fp.grow:
        fragments = touching & ~_keep_components(touching & cells, below, connectivity=1)
        touching = _fill_holes(touching | (_dilate(fragments, footprint) & cells), fp.hole_below)
    out[touching] = BOUNDARY

    near_wide = _fill_holes(_near_another_cell(labels, fp.near_wide), fp.hole_below)
    zones, _ = ndimage.label(near_wide, structure=_FULL)
    surviving = np.unique(zones[_erode(near_wide, fp.erode)])
    out[near_wide & ~np.isin(zones, surviving)] = BOUNDARY  # zones that vanish entirely under erosion

    near_boundary = _dilate(out == BOUNDARY, fp.near)
    out[_small_components(out == _GAP, 3, connectivity=1) & near_boundary] = BOUNDARY
    near_boundary = _dilate(out == BOUNDARY, fp.near)
    out[_small_components(out == BODY, 2, connectivity=1) & near_boundary] = BOUNDARY
    out[_small_components(out == BOUNDARY, 2, connectivity=2)] = BODY
    out[out == _GAP] = BACKGROUND
    return out


def direction_maps(instance: np.ndarray) -> np.ndarray:
    """Full-range bounding-box direction maps (CISCA ``dir_distance_map_fullrange``).

    Inside each instance every map is a linear ramp from -1 to +1: ``h`` over its columns, ``v`` over its
    rows, ``tl`` along ``row + col`` (top-left to bottom-right) and ``bl`` along ``col - row`` (bottom-left
    to top-right). The reference pads the box to a square before the diagonal ramps and then min-max
    rescales them over the instance's pixels; that rescaling makes the padding irrelevant, so each
    diagonal is simply ``row + col`` (or ``col - row``) min-max rescaled over the instance. A ramp is
    computed as ``(2x - min - max) / (max - min)``, which negates exactly when ``x`` does, so the maps are
    exactly equivariant under the dihedral views.

    Choices: instances whose bounding box is 1 px high or wide get 0 in all four maps (as the reference,
    which skips them). A diagonal that is constant over an instance (pixels on one anti-diagonal) gets 0,
    the midpoint; the reference writes -1 there, which would break equivariance.

    Parameters
    ----------
    instance : (H, W) integer instance ids, 0 = background.

    Returns
    -------
    (4, H, W) float32 in [-1, 1], channels (h, v, tl, bl), 0 on background.
    """
    labels = _as_instance_map(instance)
    out = np.zeros((4, *labels.shape), dtype=np.float32)
    pixels = np.flatnonzero(labels)
    if pixels.size == 0:
        return out
    ids = labels.ravel()[pixels]
    if ids.max() >= labels.size:  # sparse huge ids: make them compact so the per-instance tables stay small
        _, ids = np.unique(ids, return_inverse=True)
    rows, cols = np.divmod(pixels.astype(np.int32), np.int32(labels.shape[1]))
    coords = np.stack((cols, rows, rows + cols, cols - rows))  # (4, pixels): what h, v, tl, bl ramp along
    lo = np.full((4, int(ids.max()) + 1), np.iinfo(np.int32).max, dtype=np.int32)
    hi = np.full_like(lo, np.iinfo(np.int32).min)
    for channel in range(4):
        np.minimum.at(lo[channel], ids, coords[channel])
        np.maximum.at(hi[channel], ids, coords[channel])
    span = np.maximum(hi - lo, 1).astype(np.float32)  # a 0 span has a 0 numerator below: ramp 0
    # Small integers are exact in float32 and the division is correctly rounded, so ramps negate exactly.
    ramps = (2 * coords - np.take(lo + hi, ids, axis=1)).astype(np.float32) / np.take(span, ids, axis=1)
    ramps[:, ((hi[0] == lo[0]) | (hi[1] == lo[1]))[ids]] = 0.0  # 1-px-high or -wide boxes
    out.reshape(4, -1)[:, pixels] = ramps
    return out


def regression_weight(instance: np.ndarray, radius: int = 6, low: float = 0.05) -> np.ndarray:
    """Weight of the direction-map losses: 1 within ``radius`` px of any cell, ``low`` elsewhere.

    Parameters
    ----------
    instance : (H, W) integer instance ids, 0 = background.
    radius : dilation radius in pixels (a ``skimage.morphology.disk``).
    low : weight far from cells.

    Returns
    -------
    (H, W) float32.
    """
    labels = _as_instance_map(instance)
    if radius < 0:
        raise EmbedstoreError(f"regression weight radius must be >= 0, got {radius}")
    near = ndimage.binary_dilation(labels > 0, structure=disk(radius).astype(bool))
    return np.where(near, np.float32(1.0), np.float32(low)).astype(np.float32)


def _as_instance_map(instance: np.ndarray) -> np.ndarray:
    labels = np.asarray(instance)
    if labels.ndim != 2:
        raise EmbedstoreError(f"instance map must be 2-D (H, W), got shape {labels.shape}")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise EmbedstoreError(f"instance map must hold integer ids, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise EmbedstoreError(f"instance map ids must be >= 0, got {labels.min()}")
    return labels


def _magnification_table(magnification: str | float) -> int:
    """20 for magnifications below 30x, else 40; accepts "20x", "40X", 20, 40.0."""
    text = str(magnification).strip().lower().removesuffix("x")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise EmbedstoreError(f"magnification must be like '20x', '40x' or a positive number, got {magnification!r}")
    return 20 if value < 30 else 40


def _near_another_cell(labels: np.ndarray, footprint: _Footprint) -> np.ndarray:
    """Cell pixels with a pixel of a different cell within ``footprint``: (H, W) bool."""
    top = np.iinfo(labels.dtype).max
    highest, lowest = labels, np.where(labels > 0, labels, top)
    for element, repeats in footprint:
        for _ in range(repeats):
            highest = ndimage.grey_dilation(highest, footprint=element, mode="constant", cval=0)
            lowest = ndimage.grey_erosion(lowest, footprint=element, mode="constant", cval=top)
    return (labels > 0) & ((highest > labels) | (lowest < labels))


def _dilate(mask: np.ndarray, footprint: _Footprint) -> np.ndarray:
    for element, repeats in footprint:
        mask = ndimage.binary_dilation(mask, structure=element, iterations=repeats)
    return mask


def _erode(mask: np.ndarray, footprint: _Footprint) -> np.ndarray:
    for element, repeats in footprint:
        mask = ndimage.binary_erosion(mask, structure=element, iterations=repeats, border_value=1)
    return mask


def _keep_components(mask: np.ndarray, below: int, connectivity: int) -> np.ndarray:
    """``mask`` without its connected components of fewer than ``below`` pixels."""
    return remove_small_objects(mask, max_size=below - 1, connectivity=connectivity)


def _small_components(mask: np.ndarray, below: int, connectivity: int) -> np.ndarray:
    """Pixels of ``mask`` whose connected component has fewer than ``below`` pixels."""
    return mask & ~_keep_components(mask, below, connectivity)


def _fill_holes(mask: np.ndarray, below: int) -> np.ndarray:
    """Fill 4-connected holes of fewer than ``below`` pixels (including those touching the tile edge)."""
    return remove_small_holes(mask, max_size=below - 1, connectivity=1)

