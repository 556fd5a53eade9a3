"""Connected-component filters of the 3-class map: small pieces, pieces without a core, small holes.

They answer what ``skimage.morphology.remove_small_objects`` / ``remove_small_holes`` and a binary
reconstruction answer (the reference port in tests/trainer/targets/test_targets.py uses those), faster
on the sparse masks of a tile: pieces of one or two pixels come from neighbour counts, sparse masks are
labelled in a compact copy, and hole filling labels only the thin background.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from embedstore.imaging.morphology import dilate, erode, window_sum

_CONNECTIVITY = {1: ndimage.generate_binary_structure(2, 1), 2: ndimage.generate_binary_structure(2, 2)}
_BLOCK = _CONNECTIVITY[2]  # 3x3 square


def components(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
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


def small_components(mask: np.ndarray, below: int, connectivity: int) -> np.ndarray:
    """Pixels of ``mask`` whose connected component has fewer than ``below`` (>= 2) pixels: (H, W) bool.

    Components of one or two pixels are found from neighbour counts (much faster than labelling): a
    lone pixel has no neighbour, and a pair is two neighbours that each have exactly one.
    """
    if below <= 3:
        window = _CONNECTIVITY[connectivity]
        count = window_sum(mask.view(np.uint8), window)  # mask pixels in each window, itself included
        small = mask & (count == 1)
        if below == 3:
            single = mask & (count == 2)
            small |= single & (window_sum(single.view(np.uint8), window) == 2)
        return small
    pixels, component = components(mask, connectivity)
    return _on(mask.shape, pixels[np.bincount(component)[component] < below])


def components_without(mask: np.ndarray, core: np.ndarray) -> np.ndarray:
    """Pixels of the 8-connected components of ``mask`` without a pixel of ``core``: (H, W) bool."""
    pixels, component = components(mask, connectivity=2)
    kept = np.zeros(component.size + 1, dtype=bool)  # component ids never exceed the pixel count
    kept[component[core.ravel()[pixels]]] = True
    return _on(mask.shape, pixels[~kept[component]])


def fill_holes(mask: np.ndarray, below: int) -> np.ndarray:
    """Fill 4-connected holes of fewer than ``below`` (<= 9) pixels, including those at the tile edge.

    Background pixels of a 3x3 all-background block inside the tile lie in a hole of at least 9 pixels.
    So only the remaining thin background needs labelling, and one of its components is a whole hole
    unless it touches such a block.
    """
    background = ~mask
    if below <= 3:
        return mask | small_components(background, below, connectivity=1)
    centres = erode(background, _BLOCK)
    centres[:1] = centres[-1:] = centres[:, :1] = centres[:, -1:] = False  # blocks must lie inside the tile
    blocks = dilate(centres, _BLOCK)
    thin = background & ~blocks
    pixels, component = components(thin, connectivity=1)
    hole = np.bincount(component) < below
    hole[component[dilate(blocks, _CONNECTIVITY[1]).ravel()[pixels]]] = False
    return mask | _on(mask.shape, pixels[hole[component]])
