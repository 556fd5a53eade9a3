"""Training targets derived from an instance label map: the CISCA 3-class map, 4 direction maps, weights.

All targets are pure functions of the label map (and the class map), so they can be recomputed after any
crop or dihedral view; ``embedstore.trainer.targets.dihedral`` transforms them without recomputation and the two
agree exactly. Conventions follow CISCA (vadori/cytoark, ``generate_graymask4`` and
``dir_distance_map_fullrange``); the few deliberate deviations are documented where they are made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.morphology import diamond, disk, footprint_rectangle, octagon

from embedstore.errors import EmbedstoreError
from embedstore.imaging.morphology import dilate, erode
from embedstore.imaging.scale import parse_magnification
from embedstore.trainer.targets.components import components_without, fill_holes, small_components

BOUNDARY, BODY, BACKGROUND = 0, 1, 2
_GAP = 3  # background squeezed between or inside cells; only used while building the map
# (three_class_map builds the map by arithmetic on these four values)

_Footprint = tuple[tuple[np.ndarray, int], ...]  # skimage footprint sequence: apply each (3x3, repeats)


@dataclass(frozen=True)
class _Footprints:
    """Magnification-dependent structuring elements and size thresholds of the 3-class map."""

    gap: _Footprint  # closing that finds background squeezed between cells
    near: _Footprint  # reach within which another cell makes a pixel "touching"
    widen: _Footprint  # near followed by widen: wider reach, for thin near-contact zones
    erode: _Footprint  # erosion that thin near-contact zones do not survive
    grow: tuple[tuple[int, _Footprint], ...]  # (fragments below this size, dilate them by this)
    hole_below: int  # holes of the boundary mask smaller than this are filled

    @property
    def near_wide(self) -> _Footprint:
        return self.near + self.widen


def _square(n: int) -> _Footprint:
    return footprint_rectangle((n, n), decomposition="sequence")


def _diamond(r: int) -> _Footprint:
    return diamond(r, decomposition="sequence")


# The 40x elements are the MATLAB strel('disk', r) shapes the reference writes out: disk 2 = diamond(2),
# disk 5 = 9x9 octagon(5, 2), disk 6 = 11x11 octagon(7, 2) = diamond(2) then a 7x7 square. All are
# D4-symmetric, which keeps the map exactly equivariant under the dihedral views. They are kept as exact
# sequences of 3x3 elements (faster).
_FOOTPRINTS = {
    20: _Footprints(gap=_square(5), near=_square(3), widen=_square(3), erode=_square(3),
                    grow=((2, _square(3)), (4, _diamond(1))), hole_below=3),
    40: _Footprints(gap=octagon(5, 2, decomposition="sequence"), near=_diamond(2), widen=_square(7),
                    erode=_square(5), grow=((6, _diamond(2)), (11, _square(3))), hole_below=8),
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
    dilation and one grey erosion of the label map instead of one dilation per cell: over the footprint,
    the highest id and the lowest non-zero id both equal the pixel's own id unless another cell is there.
    Gap pixels (background squeezed between cells) are returned as background. Outside the tile counts
    as neutral for every dilation and erosion, which equals the reference's reflect padding for these
    convex symmetric footprints. The reference's step that turns tiny background islands into gap is left
    out: as written, its mask is disjoint from the background, so it never changes the map.

    For speed (a few ms per 256x256 tile instead of ~50), dilations and erosions are the shifted-view
    engine of :mod:`embedstore.imaging.morphology`, components of one or two pixels are found from
    neighbour counts, and labelling skips what cannot be small (:mod:`.components`).

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
    ids = _compact_ids(labels)
    cells = ids > 0

    # The map is built by arithmetic on the class values (BOUNDARY 0, BODY 1, BACKGROUND 2, _GAP 3), which
    # is much faster than assigning through boolean masks.
    gap = ~cells & erode(dilate(cells, fp.gap), fp.gap)
    out = np.subtract(BACKGROUND, cells, dtype=np.uint8)  # BODY in cells, BACKGROUND elsewhere
    out += gap  # -> _GAP

    highest, lowest = dilate(ids, fp.near), erode(_lowest(ids), fp.near)
    touching = fill_holes(cells & (highest != lowest), fp.hole_below)
    for below, footprint in fp.grow:
        # touching pixels outside the cells (filled holes) count as fragments too, as in the reference
        fragments = (touching & ~cells) | small_components(touching & cells, below, connectivity=1)
        touching = fill_holes(touching | (dilate(fragments, footprint) & cells), fp.hole_below)
    out *= ~touching  # -> BOUNDARY

    highest, lowest = dilate(highest, fp.widen), erode(lowest, fp.widen)
    near_wide = fill_holes(cells & (highest != lowest), fp.hole_below)
    out *= ~components_without(near_wide, erode(near_wide, fp.erode))  # thin zones -> BOUNDARY

    near_boundary = dilate(out == BOUNDARY, fp.near)
    out *= ~(small_components(out == _GAP, 3, connectivity=1) & near_boundary)
    near_boundary = dilate(out == BOUNDARY, fp.near)
    out *= ~(small_components(out == BODY, 2, connectivity=1) & near_boundary)
    out += small_components(out == BOUNDARY, 2, connectivity=2)  # lone boundary pixels -> BODY
    out -= out == _GAP  # -> BACKGROUND
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
    height, width = labels.shape
    out = np.zeros((4, height, width), dtype=np.float32)
    cells = labels > 0
    pixels = np.flatnonzero(cells)  # raster order
    if pixels.size == 0:
        return out
    ids = labels.ravel()[pixels]
    if ids.max() >= labels.size:  # sparse huge ids: make them compact so the per-instance tables stay small
        _, ids = np.unique(ids, return_inverse=True)
    ids = ids.astype(np.intp, copy=False)  # fastest to index with
    rows = np.repeat(np.arange(height), np.count_nonzero(cells, axis=1))
    cols = pixels - rows * width
    coords = (cols, rows, rows + cols, cols - rows)  # what h, v, tl, bl ramp along
    # Every coordinate grows (or stays) along a horizontal run of a cell's pixels, so its minimum over the
    # cell lies on a run start and its maximum on a run end: extremes come from those few pixels.
    starts = np.ones(pixels.size, dtype=bool)
    starts[1:] = (pixels[1:] != pixels[:-1] + 1) | (ids[1:] != ids[:-1]) | (cols[1:] == 0)
    first, last = np.flatnonzero(starts), np.append(np.flatnonzero(starts[1:]), pixels.size - 1)
    reach = height + width  # beyond every coordinate
    lo, hi = np.full((4, int(ids.max()) + 1), reach), np.full((4, int(ids.max()) + 1), -reach)
    for channel, coord in enumerate(coords):
        np.minimum.at(lo[channel], ids[first], coord[first])
        np.maximum.at(hi[channel], ids[last], coord[last])
    # Boxes 1 px high or wide stay 0: a numerator that is always positive over an infinite span gives +0.
    ramped = (hi[0] > lo[0]) & (hi[1] > lo[1])
    middle = np.where(ramped, lo + hi, -2 * reach).astype(np.float32)
    span = np.where(ramped, np.maximum(hi - lo, 1), np.inf).astype(np.float32)  # a 0 span has a 0 numerator
    # Small integers are exact in float32 and the division is correctly rounded, so ramps negate exactly.
    for channel, coord in enumerate(coords):
        ramp = coord.astype(np.float32)
        ramp *= 2
        ramp -= middle[channel][ids]
        ramp /= span[channel][ids]
        out[channel].ravel()[pixels] = ramp
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
    near = dilate(labels > 0, disk(radius).astype(bool))
    return np.where(near, np.float32(1.0), np.float32(low))


def _as_instance_map(instance: np.ndarray) -> np.ndarray:
    labels = np.asarray(instance)
    if labels.ndim != 2:
        raise EmbedstoreError(f"instance map must be 2-D (H, W), got shape {labels.shape}")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise EmbedstoreError(f"instance map must hold integer ids, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise EmbedstoreError(f"instance map ids must be >= 0, got {labels.min()}")
    return np.ascontiguousarray(labels)  # e.g. from MATLAB files: mixed memory orders make shifts slow


def _magnification_table(magnification: str | float) -> int:
    """20 for magnifications below 30x, else 40."""
    return 20 if parse_magnification(magnification) < 30 else 40


def _compact_ids(labels: np.ndarray) -> np.ndarray:
    """``labels`` in the narrowest unsigned dtype that keeps its maximum value free (see ``_lowest``);
    narrow ids filter faster."""
    top = int(labels.max(initial=0))
    if top >= np.iinfo(np.uint32).max:  # only equality of ids matters: number them 1..n instead
        values, inverse = np.unique(labels, return_inverse=True)
        labels, top = inverse.reshape(labels.shape) + int(values[0] > 0), values.size
    dtype = next(t for t in (np.uint8, np.uint16, np.uint32) if top < np.iinfo(t).max)
    return labels.astype(dtype)


def _lowest(ids: np.ndarray) -> np.ndarray:
    """``ids`` with background raised to the dtype's maximum, so that minima find the lowest cell id."""
    return np.where(ids > 0, ids, np.iinfo(ids.dtype).max)
