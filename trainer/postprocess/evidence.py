"""Contour evidence: where the direction maps jump between touching instances (CISCA notes §4).

The 5x5 correlations are written out as the rank-2 split of K_h (:func:`_gradient`): measured 1.4x
faster than four ``scipy.ndimage.correlate`` calls with the :func:`gradient_kernels` (thread CPU on the
32 ``embed bench postprocess`` tiles, script in docs/postprocess.md § Speed); that correlation is the
oracle of tests/trainer/postprocess/test_evidence.py.
"""

from __future__ import annotations

import numpy as np

from embedstore.imaging.gradients import gradient_kernels


def _minmax01(x: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1] over the whole array (all zeros when it is constant, like cv2.NORM_MINMAX)."""
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros_like(x)
    return (x - lo) * np.float32(1.0 / (hi - lo))


# K_h's weights for dx = 1 and dx = 2 at |dy| = 0, 1, 2 (the columns dx = -1, -2 are their negatives)
_K_H_COLUMNS = tuple(tuple(float(w) for w in gradient_kernels()["h"][2:, dx]) for dx in (3, 4))


def _window(a: np.ndarray, axis: int, start: int, length: int) -> np.ndarray:
    """``a[start:start + length]`` (axis -2) or ``a[:, start:start + length]`` (axis -1) of a 2-D array."""
    return a[start:start + length] if axis == -2 else a[:, start:start + length]


def _gradient(padded: np.ndarray, axis: int) -> np.ndarray:
    """Correlation with K_h (``axis=-1``) or K_v (``axis=-2``) of a map (H+4, W+4) padded by 2.

    K_h has rank 2: a symmetric 5-tap weighting across ``axis`` times the odd differences at
    distance 1 and 2 along it, so the two weightings share the sums of mirrored lines. Slicing
    both axes directly (no transposes) keeps every operation on contiguous rows.
    """
    across = -1 if axis == -2 else -2
    size = padded.shape[across] - 4
    centre = _window(padded, across, 2, size)
    near = _window(padded, across, 1, size) + _window(padded, across, 3, size)
    far = _window(padded, across, 0, size) + _window(padded, across, 4, size)
    (a1, b1, c1), (a2, b2, c2) = _K_H_COLUMNS
    s1 = a1 * centre + b1 * near + c1 * far
    s2 = a2 * centre + b2 * near + c2 * far
    length = padded.shape[axis] - 4
    return (_window(s1, axis, 3, length) - _window(s1, axis, 1, length)
            + _window(s2, axis, 4, length) - _window(s2, axis, 0, length))


def contour_evidence(directions: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Where the direction maps jump between touching instances, (H, W) float32 in [0, 1].

    Each map is correlated with its 5x5 derivative kernel (:func:`gradient_kernels`, reflect-101
    border as cv2.filter2D) and turned into ``1 - minmax01(gradient)``: the +1 -> -1 jump between
    two neighbouring boxes is the most negative gradient, hence evidence near 1. The pixel-wise
    maximum over the maps is kept and pixels outside ``foreground`` are zeroed. The reference also
    min-max normalises each map before the correlation; the kernels sum to zero, so that affine
    rescaling cancels in the normalisation after it and is skipped.

    Parameters
    ----------
    directions : (4, H, W) float
        h, v, tl, bl direction maps.
    foreground : (H, W) bool
    """
    evidence = np.zeros(foreground.shape, np.float32)
    for name, plane in zip(("h", "v", "tl", "bl"), directions):
        padded = np.pad(np.asarray(plane, np.float32), 2, mode="reflect")  # one map at a time stays in cache
        if name == "h":
            grad = _gradient(padded, -1)
        elif name == "v":
            grad = _gradient(padded, -2)
        elif name == "tl":  # K_tl = K_h + K_v
            grad = _gradient(padded, -1) + _gradient(padded, -2)
        else:  # K_bl = K_h - K_v
            grad = _gradient(padded, -1) - _gradient(padded, -2)
        np.maximum(evidence, 1.0 - _minmax01(grad), out=evidence)
    evidence[~foreground] = 0.0
    return evidence
