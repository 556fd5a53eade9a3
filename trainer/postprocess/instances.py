"""Maps -> instance map: markers, marker watershed and the three variants (CISCA notes §4).

Pure numpy / scipy / scikit-image: a user can call :func:`instances_from_maps` on arrays from any model.
Inputs follow the trainer's target layout: a 3-class probability map (boundary, body, background) and
four bounding-box direction maps (h, v, tl, bl in [-1, 1]). Binary morphology is the shifted-view
engine of :mod:`embedstore.imaging.morphology` (measured 5-30x faster than ``scipy.ndimage`` on
256 px tiles); the post-processing has to stay near 10 ms per tile on one core.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import disk, footprint_rectangle, skeletonize
from skimage.segmentation import watershed

from embedstore.errors import EmbedstoreError
from embedstore.imaging.morphology import dilate, erode
from embedstore.trainer.postprocess.evidence import contour_evidence
from embedstore.trainer.postprocess.params import PostprocessParams

_CROSS = ndi.generate_binary_structure(2, 1)
_SQUARE = ndi.generate_binary_structure(2, 2)
_BLUR_3X3 = (0.25, 0.5, 0.25)  # OpenCV's 3x3 Gaussian for sigma 0 (its fixed small-kernel table)


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Zero the labels with fewer than ``min_size`` pixels (the others keep their ids), (H, W).

    Same result as ``skimage.morphology.remove_small_objects(labels, max_size=min_size - 1)`` (the
    test oracle), which returns a masked copy even when nothing is small and warns on single-label
    maps: the whole ``cisca`` post-processing measured 4% faster with this filter (7.4 against 7.8 ms
    per tile, thread CPU, 32 ``embed bench postprocess`` tiles).
    """
    if min_size <= 1 or not labels.any():
        return labels
    small = np.bincount(labels.ravel()) < min_size
    small[0] = False
    if not small.any():
        return labels
    return np.where(small[labels], 0, labels)


def _components(mask: np.ndarray, min_size: int, structure: np.ndarray) -> np.ndarray:
    """Label the connected components of a bool mask, dropping those below ``min_size`` pixels."""
    labels, _ = ndi.label(mask, structure)
    return remove_small(labels, min_size)


def _pieces_without(labels: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """Pixels of the labelled pieces that contain no pixel of the bool mask ``hits``."""
    hit = np.zeros(int(labels.max()) + 1, bool)
    hit[labels[hits]] = True
    hit[0] = True
    return ~hit[labels]


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Renumber the ids present to 1..n keeping their order, (H, W) int32.

    ``skimage.segmentation.relabel_sequential`` gives the same map (the oracle in
    tests/trainer/postprocess/test_instances.py) but measured 1.8x slower than this lookup table
    (thread CPU on the 32 ``embed bench postprocess`` tiles, docs/postprocess.md § Speed).
    """
    present = np.bincount(labels.ravel()) > 0
    present[0] = False
    lut = np.cumsum(present, dtype=np.int32)
    lut[~present] = 0
    return lut[labels]


def blur3(x: np.ndarray) -> np.ndarray:
    """Separable 3x3 Gaussian [1/4, 1/2, 1/4] with a reflect-101 border (cv2.GaussianBlur(x, (3, 3), 0)).

    Equals ``ndi.correlate1d`` along both axes with ``mode="mirror"`` (the test oracle), which measured
    1.9x slower on the 32 ``embed bench postprocess`` tiles. (H, W) float32 in, (H, W) float32 out.
    """
    a, b, c = _BLUR_3X3
    p = np.pad(x, 1, mode="reflect")
    rows = a * p[:-2] + b * p[1:-1] + c * p[2:]
    return a * rows[:, :-2] + b * rows[:, 1:-1] + c * rows[:, 2:]


def _reference_markers(pieces: np.ndarray, params: PostprocessParams) -> np.ndarray:
    """CISCA markers: the eroded body plus the pieces the erosion erases entirely; seeds closer than
    a cross dilation form a group and groups below ``min_marker_size`` pixels are dropped; the kept
    seeds are labelled 8-connected. ``pieces`` labels the body's 8-connected pieces. (H, W) int32."""
    body = pieces > 0
    seeds = body
    if params.erosion_radius > 0:
        eroded = erode(body, disk(params.erosion_radius, dtype=bool))
        seeds = eroded | (_pieces_without(pieces, eroded) & body)
    groups, _ = ndi.label(dilate(seeds, _CROSS), _SQUARE)
    groups[~seeds] = 0
    markers, _ = ndi.label(remove_small(groups, params.min_marker_size) > 0, _SQUARE)
    return markers


def _improved_markers(pieces: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One marker per body piece, plus one per foreground piece that holds no body. (H, W) int32.

    The body map and the contour cut already separate touching cells, so the pieces need no
    erosion (which splits elongated cells at their necks). A foreground piece made only of
    boundary-class pixels (a small or thin cell close to a neighbour) becomes its own marker
    instead of being lost.
    """
    markers = pieces.astype(np.int32, copy=True)
    regions, _ = ndi.label(mask, _SQUARE)
    orphan = _pieces_without(regions, pieces > 0)
    markers[orphan] = regions[orphan] + int(pieces.max())
    return markers


def _watershed(relief: np.ndarray, markers: np.ndarray, mask: np.ndarray, skip_inert: bool) -> np.ndarray:
    """skimage's 8-connected marker watershed inside ``mask``, (H, W) int32.

    With ``skip_inert`` the marker pixels that have no unlabelled neighbour are left out of the
    flooding and pasted back afterwards: they cannot flood anything, so the result differs only in
    how ties on flat plateaus are broken, and the heap work shrinks by half when markers are whole
    body pieces. The reference variants flood with every marker pixel, as the reference does.
    """
    if not skip_inert:
        return watershed(relief, markers, mask=mask, connectivity=2)
    seeded = markers > 0
    inert = seeded & erode(seeded | ~mask, _SQUARE)
    out = watershed(relief, np.where(inert, 0, markers), mask=mask & ~inert, connectivity=2)
    out[inert] = markers[inert]
    return out


def _check_maps(contour_prob: np.ndarray, directions: np.ndarray) -> None:
    if contour_prob.ndim != 3 or contour_prob.shape[0] != 3:
        raise EmbedstoreError(f"contour_prob must be (3, H, W) boundary/body/background, got {contour_prob.shape}")
    if directions.ndim != 3 or directions.shape[0] != 4 or directions.shape[1:] != contour_prob.shape[1:]:
        raise EmbedstoreError(f"directions must be (4, H, W) h/v/tl/bl matching contour_prob "
                              f"{contour_prob.shape}, got {directions.shape}")


def instances_from_maps(contour_prob: np.ndarray, directions: np.ndarray,
                        params: PostprocessParams) -> np.ndarray:
    """Instance map from the predicted 3-class probabilities and direction maps.

    ``cisca`` follows the reference (notes §4): contour evidence from the direction-map gradients
    (threshold 0.57) cuts the body map along its skeleton; the eroded body pieces, plus the pieces
    the erosion erases, seed a watershed of ``0.5 * (1 - P_body) + 0.5 * (1 - blurred contour-free
    foreground)`` inside the opened foreground mask; instances and foreground blobs below
    ``min_size`` are removed. ``nocut`` ignores the direction maps (no cut, relief from the body
    probability and the foreground only). ``improved`` keeps the cut but seeds one marker per body
    piece (and per foreground piece without body) and floods the unopened mask.

    Parameters
    ----------
    contour_prob : (3, H, W) float
        Softmax over boundary (touching-cell band), body, background.
    directions : (4, H, W) float
        Bounding-box direction maps h, v, tl, bl in [-1, 1] (0 on background); unused by ``nocut``.
    params : PostprocessParams
        Constants and variant; see :meth:`PostprocessParams.for_dataset`.

    Returns
    -------
    (H, W) int32
        Instance ids 1..n, 0 = background.
    """
    _check_maps(contour_prob, directions)
    p_boundary, p_body, p_background = (np.asarray(c, np.float32) for c in contour_prob)
    foreground = (p_boundary + p_body) >= 0.5
    body = (p_body > p_boundary) & (p_body > p_background)
    if params.variant == "nocut":
        interior = foreground
    else:
        contour = contour_evidence(directions, foreground) >= params.threshold
        interior = foreground & ~contour
        square = footprint_rectangle((params.struct_radius, params.struct_radius), dtype=bool)
        body &= ~(dilate(skeletonize(contour), square) & contour)
    pieces = _components(body, params.min_size // 4, _SQUARE)

    mask = (p_boundary + p_body) > p_background
    if params.variant == "improved":
        markers = _improved_markers(pieces, mask)
    else:
        markers = _reference_markers(pieces, params)
        footprint = _SQUARE if params.opening == "square" else _CROSS
        mask = dilate(erode(mask, footprint, outside="background"), footprint)  # scipy's binary_opening

    w = params.distmap_weight
    relief = (1.0 - w) * 255.0 * (1.0 - p_body) + w * 255.0 * (1.0 - blur3(interior.astype(np.float32)))
    flooded = _watershed(relief, markers, mask, skip_inert=params.variant == "improved")
    instances = remove_small(flooded, params.min_size)
    instances[_components(instances > 0, params.min_size, _CROSS) == 0] = 0
    return relabel_sequential(instances)
