"""Contour evidence from the direction maps (trainer/postprocess/evidence.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from embedstore.trainer.postprocess import contour_evidence, gradient_kernels


def _two_touching_squares() -> tuple[np.ndarray, np.ndarray]:
    """Two 20x20 squares sharing an edge at column 30 and their bounding-box ramps h, v, tl, bl."""
    instance = np.zeros((64, 64), np.int32)
    instance[10:30, 10:30] = 1
    instance[10:30, 30:50] = 2
    out = np.zeros((4, *instance.shape), np.float32)
    for i in (1, 2):
        rows, cols = np.nonzero(instance == i)
        for channel, x in enumerate((cols, rows, rows + cols, cols - rows)):
            out[channel, rows, cols] = -1 + 2 * (x - x.min()) / (x.max() - x.min())
    return instance, out


def test_gradient_kernels_follow_the_reference_formula() -> None:
    k = gradient_kernels()
    np.testing.assert_allclose(k["h"][2], [-0.5, -1, 0, 1, 0.5])
    np.testing.assert_allclose(k["h"][0], [-0.25, -0.2, 0, 0.2, 0.25])
    np.testing.assert_array_equal(k["v"], k["h"].T)
    np.testing.assert_allclose(k["tl"], k["h"] + k["v"])
    np.testing.assert_allclose(k["bl"], np.rot90(k["tl"]))


def _minmax(x: np.ndarray) -> np.ndarray:
    return (x - x.min()) / (x.max() - x.min())


def test_contour_evidence_equals_the_plain_5x5_correlation() -> None:
    rng = np.random.default_rng(3)
    directions = ndi.gaussian_filter(rng.standard_normal((4, 40, 50)), (0, 2, 2)).astype(np.float32)
    foreground = rng.random((40, 50)) > 0.3
    expected = np.zeros((40, 50))
    for plane, name in zip(directions, ("h", "v", "tl", "bl")):
        grad = ndi.correlate(_minmax(plane.astype(np.float64)), gradient_kernels()[name].astype(np.float64),
                             mode="mirror")  # mirror = OpenCV's default reflect-101 border
        expected = np.maximum(expected, 1 - _minmax(grad))
    expected[~foreground] = 0
    np.testing.assert_allclose(contour_evidence(directions, foreground), expected, atol=1e-5)


def test_contour_evidence_peaks_on_the_interface_of_touching_cells() -> None:
    instance, directions = _two_touching_squares()
    evidence = contour_evidence(directions, instance > 0)
    assert evidence[20, 29:31].min() == pytest.approx(1.0, abs=0.05)
    assert evidence[20, 18:22].max() < 0.57  # inside a cell: below the reference threshold


