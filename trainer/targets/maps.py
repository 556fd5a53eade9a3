"""Training targets derived from an instance label map: the CISCA 3-class map, 4 direction maps, weights.

All targets are pure functions of the label map (and the class map), so they can be recomputed after any
crop or dihedral view; ``embedstore.trainer.targets.dihedral`` transforms them without recomputation and the two
agree exactly. Conventions follow CISCA (vadori/cytoark, ``generate_graymask4`` and
``dir_distance_map_fullrange``); the few deliberate deviations are documented where they are made.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage
from skimage.morphology import diamond, disk, footprint_rectangle, octagon

from embedstore.errors import EmbedstoreError
from embedstore.imaging.scale import parse_magnification

BOUNDARY, BODY, BACKGROUND = 0, 1, 2
_GAP = 3  # background squeezed between or inside cells; only used while building the map
# (three_class_map builds the map by arithmetic on these four values)
_CONNECTIVITY = {1: ndimage.generate_binary_structure(2, 1), 2: ndimage.generate_binary_structure(2, 2)}

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
_BLOCK, _CROSS = _square(3), ((_CONNECTIVITY[1], 1),)  # 3x3 square and 4-neighbour cross


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

    For speed (a few ms per 256x256 tile instead of ~50), every step runs on an image padded by one
    column: dilations and erosions are maxima and minima of shifted flat views (``_spread``), components
    of one or two pixels are found from neighbour counts, and labelling skips what cannot be small.

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
    ids = _padded_ids(labels)
    cells = ids > 0

    # The map is built by arithmetic on the class values (BOUNDARY 0, BODY 1, BACKGROUND 2, _GAP 3), which
    # is much faster than assigning through boolean masks.
    gap = ~cells & _erode(_dilate(cells, fp.gap), fp.gap)
    out = np.subtract(BACKGROUND, cells, dtype=np.uint8)  # BODY in cells, BACKGROUND (padding too) elsewhere
    out += gap  # -> _GAP

    highest, lowest = _spread(ids, fp.near, np.maximum), _spread(_lowest(ids), fp.near, np.minimum)
    touching = _fill_holes(cells & (highest != lowest), fp.hole_below)
    for below, footprint in fp.grow:
        # touching pixels outside the cells (filled holes) count as fragments too, as in the reference
        fragments = (touching & ~cells) | _small_components(touching & cells, below, connectivity=1)
        touching = _fill_holes(touching | (_dilate(fragments, footprint) & cells), fp.hole_below)
    out *= ~touching  # -> BOUNDARY

    highest, lowest = _spread(highest, fp.widen, np.maximum), _spread(lowest, fp.widen, np.minimum)
    near_wide = _fill_holes(cells & (highest != lowest), fp.hole_below)
    out *= ~_components_without(near_wide, _erode(near_wide, fp.erode))  # thin zones -> BOUNDARY

    near_boundary = _dilate(out == BOUNDARY, fp.near)
    out *= ~(_small_components(out == _GAP, 3, connectivity=1) & near_boundary)
    near_boundary = _dilate(out == BOUNDARY, fp.near)
    out *= ~(_small_components(out == BODY, 2, connectivity=1) & near_boundary)
    out += _small_components(out == BOUNDARY, 2, connectivity=2)  # lone boundary pixels -> BODY
    out -= out == _GAP  # -> BACKGROUND
    return np.ascontiguousarray(out[:, :-1])


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
    near = _dilate_disk(labels > 0, radius)
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


def _padded_ids(labels: np.ndarray) -> np.ndarray:
    """(H, W + 1) copy of ``labels`` with a 0 padding column, in the narrowest unsigned dtype that keeps
    its maximum value free (see ``_lowest``); narrow ids filter faster."""
    top = int(labels.max(initial=0))
    if top >= np.iinfo(np.uint32).max:  # only equality of ids matters: number them 1..n instead
        values, inverse = np.unique(labels, return_inverse=True)
        labels, top = inverse.reshape(labels.shape) + int(values[0] > 0), values.size
    dtype = next(t for t in (np.uint8, np.uint16, np.uint32) if top < np.iinfo(t).max)
    ids = np.zeros((labels.shape[0], labels.shape[1] + 1), dtype=dtype)
    ids[:, :-1] = labels
    return ids


def _lowest(ids: np.ndarray) -> np.ndarray:
    """``ids`` with background raised to the dtype's maximum, so that minima find the lowest cell id."""
    return np.where(ids > 0, ids, np.iinfo(ids.dtype).max)


def _dilate(mask: np.ndarray, footprint: _Footprint) -> np.ndarray:
    return _spread(mask, footprint, np.maximum)


def _erode(mask: np.ndarray, footprint: _Footprint) -> np.ndarray:
    return _spread(mask, footprint, np.minimum)


def _spread(image: np.ndarray, footprint: _Footprint, op: np.ufunc) -> np.ndarray:
    """Dilation (``op=np.maximum``), erosion (``np.minimum``) or window sum (``np.add``); outside is neutral.

    Works on padded images, (H, W + 1) bool or unsigned, whose last column pads the rows: it must hold 0
    (False) on entry, except for erosion, and holds 0 on return. While filtering it holds ``op``'s neutral
    value, so a flat view shifted by one pixel (fast: contiguous) reads padding, not the next row, at the
    row ends. Each 3x3 element is applied as ``op`` over shifted flat views, a full square as a row pass
    and then a column pass. The elements are symmetric and contain their centre, so dilation and erosion
    equal scipy's ``grey_``/``binary_`` ones with a neutral border.
    """
    neutral = 0
    if op is np.minimum:
        neutral = True if image.dtype == bool else np.iinfo(image.dtype).max
        image = image.copy()
        image[:, -1] = neutral
    for element, repeats in footprint:
        passes = _passes(element.astype(bool).tobytes(), image.shape)
        for _ in range(repeats):
            for shifts in passes:
                source, image = image.ravel(), image.copy()
                flat = image.ravel()
                for target, origin in shifts:
                    view = flat[target]
                    op(view, source[origin], out=view)
                image[:, -1] = neutral
    if neutral:
        image[:, -1] = 0
    return image


@lru_cache(maxsize=64)
def _passes(element: bytes, image_shape: tuple[int, int]) -> tuple[tuple[tuple[slice, slice], ...], ...]:
    """Flat (target, source) slices of the non-centre offsets of a 3x3 element (its 9 cells as bytes) on
    a padded image of ``image_shape``, grouped into passes applied one after the other."""
    cells = np.frombuffer(element, dtype=bool).reshape(3, 3)
    if cells.all():  # separable: rows, then columns
        groups = [[(0, -1), (0, 1)], [(-1, 0), (1, 0)]]
    else:
        groups = [[(int(y) - 1, int(x) - 1) for y, x in zip(*np.nonzero(cells)) if (y, x) != (1, 1)]]
    size, stride = image_shape[0] * image_shape[1], image_shape[1]
    return tuple(tuple(_flat_shift(dy * stride + dx, size) for dy, dx in group) for group in groups)


def _flat_shift(offset: int, size: int) -> tuple[slice, slice]:
    """(target, source) slices of a flat array such that ``target[i]`` reads ``source[i + offset]``."""
    return (slice(max(-offset, 0), max(size - offset, 0) if offset > 0 else size),
            slice(max(offset, 0), max(size + offset, 0) if offset < 0 else size))


def _dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by ``skimage.morphology.disk(radius)`` (outside is background): (H, W) bool.

    Each row of the disk is a centred run, so the dilation is the union of vertically shifted copies of
    the mask dilated horizontally by each run's half-width. ``radius`` columns of padding after each row
    let every shift run over the flat image.
    """
    height, width = mask.shape
    stride = width + radius
    padded = np.zeros((height, stride), dtype=bool)
    padded[:, :width] = mask
    flat = padded.ravel()
    run = flat.copy()  # the mask dilated horizontally by w px, for w = 0, 1, ..., radius in turn
    near = np.zeros_like(flat)
    for w in range(radius + 1):
        for offset in (w, -w) if w else ():
            target, source = _flat_shift(offset, flat.size)
            run[target] |= flat[source]
        for dy in _disk_rows(radius).get(w, ()):
            target, source = _flat_shift(dy * stride, flat.size)
            near[target] |= run[source]
    return np.ascontiguousarray(near.reshape(height, stride)[:, :width])


@lru_cache(maxsize=8)
def _disk_rows(radius: int) -> dict[int, tuple[int, ...]]:
    """Row offsets of ``disk(radius)`` grouped by their half-width."""
    rows: dict[int, tuple[int, ...]] = {}
    for dy, half_width in zip(range(-radius, radius + 1), disk(radius).sum(axis=1) // 2):
        rows[int(half_width)] = (*rows.get(int(half_width), ()), dy)
    return rows


def _components(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of ``mask``'s pixels (C order) and the id of each one's connected component.

    A sparse mask (under 1/32 of the pixels) is labelled in a compact copy without its empty rows and
    columns (one is kept after each occupied line, so no pixels become neighbours): several times faster.
    """
    pixels = np.flatnonzero(mask)
    if pixels.size * 32 > mask.size:
        ids, _ = ndimage.label(mask, structure=_CONNECTIVITY[connectivity])
        return pixels, ids.ravel()[pixels]
    rows, cols = np.divmod(pixels, mask.shape[1])
    rows, height = _compact_lines(rows, mask.shape[0])
    cols, width = _compact_lines(cols, mask.shape[1])
    compact = np.zeros((height, width), dtype=bool)
    compact[rows, cols] = True
    ids, _ = ndimage.label(compact, structure=_CONNECTIVITY[connectivity])
    return pixels, ids[rows, cols]


def _compact_lines(lines: np.ndarray, count: int) -> tuple[np.ndarray, int]:
    """New indices of ``lines`` (of ``count``) once the empty lines are dropped, all but the one after each
    occupied line; and the number of lines kept."""
    kept = np.zeros(count + 1, dtype=bool)
    kept[lines] = True
    kept[lines + 1] = True
    position = np.cumsum(kept) - 1
    return position[lines], int(position[-1]) + 1


def _on(shape: tuple[int, ...], pixels: np.ndarray) -> np.ndarray:
    """(H, W) bool, True at the flat indices ``pixels``."""
    mask = np.zeros(shape, dtype=bool)
    mask.ravel()[pixels] = True
    return mask


def _small_components(mask: np.ndarray, below: int, connectivity: int) -> np.ndarray:
    """Pixels of ``mask`` whose connected component has fewer than ``below`` (>= 2) pixels: (H, W) bool.

    Components of one or two pixels are found from neighbour counts (much faster than labelling): a
    lone pixel has no neighbour, and a pair is two neighbours that each have exactly one.
    """
    if below <= 3:
        window = ((_CONNECTIVITY[connectivity], 1),)
        count = _spread(mask.view(np.uint8), window, np.add)  # mask pixels in each window, itself included
        small = mask & (count == 1)
        if below == 3:
            single = mask & (count == 2)
            small |= single & (_spread(single.view(np.uint8), window, np.add) == 2)
        return small
    pixels, component = _components(mask, connectivity)
    return _on(mask.shape, pixels[np.bincount(component)[component] < below])


def _components_without(mask: np.ndarray, core: np.ndarray) -> np.ndarray:
    """Pixels of the 8-connected components of ``mask`` without a pixel of ``core``: (H, W) bool."""
    pixels, component = _components(mask, connectivity=2)
    kept = np.zeros(component.size + 1, dtype=bool)  # component ids never exceed the pixel count
    kept[component[core.ravel()[pixels]]] = True
    return _on(mask.shape, pixels[~kept[component]])


def _fill_holes(mask: np.ndarray, below: int) -> np.ndarray:
    """Fill 4-connected holes of fewer than ``below`` (<= 9) pixels, including those at the tile edge.

    Background pixels of a 3x3 all-background block inside the tile lie in a hole of at least 9 pixels.
    So only the remaining thin background needs labelling, and one of its components is a whole hole
    unless it touches such a block.
    """
    background = ~mask
    background[:, -1] = False  # padding
    if below <= 3:
        return mask | _small_components(background, below, connectivity=1)
    centres = _erode(background, _BLOCK)
    centres[:1] = centres[-1:] = centres[:, :1] = centres[:, -2:] = False  # blocks must lie inside the tile
    blocks = _dilate(centres, _BLOCK)
    thin = background & ~blocks
    pixels, component = _components(thin, connectivity=1)
    hole = np.bincount(component) < below
    hole[component[_dilate(blocks, _CROSS).ravel()[pixels]]] = False
    return mask | _on(mask.shape, pixels[hole[component]])
