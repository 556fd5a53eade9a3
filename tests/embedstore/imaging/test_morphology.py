"""The shifted-view morphology engine equals scipy.ndimage / skimage with the same footprint and border."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from scipy import ndimage as ndi
from skimage.morphology import diamond, disk, footprint_from_sequence, footprint_rectangle, octagon

from embedstore.imaging.morphology import dilate, erode, window_sum

FOOTPRINTS = {
    "cross": ndi.generate_binary_structure(2, 1),
    "square3": footprint_rectangle((3, 3)),
    "square5": footprint_rectangle((5, 5)),
    "row5": footprint_rectangle((1, 5)),
    "column5": footprint_rectangle((5, 1)),
    "disk1": disk(1),
    "disk2": disk(2),
    "disk6": disk(6),
    "diamond2": diamond(2),
    "octagon5_2": octagon(5, 2),
    "pixel": np.ones((1, 1)),
}


@pytest.fixture(scope="module")
def real_tiles(real_data: Path) -> list[np.ndarray]:
    """Four 256x256 windows of CoNSeP label maps (uint16 ids), plus a 37x53 crop with cells on its border."""
    labels = [scipy.io.loadmat(real_data / f"consep/{split}/Labels/{name}.mat")["inst_map"]
              for split, name in (("Test", "test_1"), ("Train", "train_1"))]
    tiles = [lab[y:y + 256, x:x + 256] for lab in labels for y, x in ((0, 0), (300, 500))]
    return [t.astype(np.uint16) for t in (*tiles, tiles[1][100:137, 40:93])]


@pytest.mark.parametrize("name", sorted(FOOTPRINTS))
def test_binary_dilation_equals_scipy(real_tiles: list[np.ndarray], name: str) -> None:
    footprint = FOOTPRINTS[name].astype(bool)
    for tile in real_tiles:
        np.testing.assert_array_equal(dilate(tile > 0, footprint), ndi.binary_dilation(tile > 0, footprint))


@pytest.mark.parametrize("name", sorted(FOOTPRINTS))
def test_binary_erosion_ignoring_the_outside_equals_scipy_with_border_value_1(real_tiles: list[np.ndarray],
                                                                              name: str) -> None:
    footprint = FOOTPRINTS[name].astype(bool)
    for tile in real_tiles:
        expected = ndi.binary_erosion(tile > 0, footprint, border_value=1)
        np.testing.assert_array_equal(erode(tile > 0, footprint), expected)


@pytest.mark.parametrize("name", sorted(FOOTPRINTS))
def test_binary_erosion_with_background_outside_equals_scipy_default(real_tiles: list[np.ndarray], name: str) -> None:
    footprint = FOOTPRINTS[name].astype(bool)
    for tile in real_tiles:
        np.testing.assert_array_equal(erode(tile > 0, footprint, outside="background"),
                                      ndi.binary_erosion(tile > 0, footprint))


@pytest.mark.parametrize("name", ["square3", "cross"])
def test_erosion_then_dilation_equals_scipy_binary_opening(real_tiles: list[np.ndarray], name: str) -> None:
    footprint = FOOTPRINTS[name].astype(bool)
    for tile in real_tiles:
        opened = dilate(erode(tile > 0, footprint, outside="background"), footprint)
        np.testing.assert_array_equal(opened, ndi.binary_opening(tile > 0, footprint))


@pytest.mark.parametrize("name", sorted(FOOTPRINTS))
def test_grey_dilation_and_erosion_of_ids_equal_scipy(real_tiles: list[np.ndarray], name: str) -> None:
    footprint = FOOTPRINTS[name].astype(bool)
    for tile in real_tiles:
        np.testing.assert_array_equal(dilate(tile, footprint),
                                      ndi.grey_dilation(tile, footprint=footprint, mode="constant", cval=0))
        np.testing.assert_array_equal(erode(tile, footprint),
                                      ndi.grey_erosion(tile, footprint=footprint, mode="constant", cval=65535))


@pytest.mark.parametrize("name", ["cross", "square3", "disk2"])
def test_window_sum_equals_a_zero_padded_correlation(real_tiles: list[np.ndarray], name: str) -> None:
    footprint = FOOTPRINTS[name].astype(np.uint8)
    for tile in real_tiles:
        mask = (tile > 0).view(np.uint8)
        np.testing.assert_array_equal(window_sum(mask, footprint), ndi.correlate(mask, footprint, mode="constant"))


@pytest.mark.parametrize("sequence", [octagon(5, 2, decomposition="sequence"), diamond(2, decomposition="sequence"),
                                      footprint_rectangle((7, 7), decomposition="sequence")],
                         ids=["octagon", "diamond", "square7"])
def test_a_skimage_sequence_acts_as_its_composed_footprint(real_tiles: list[np.ndarray], sequence) -> None:
    full = footprint_from_sequence(sequence).astype(bool)
    for tile in real_tiles:
        np.testing.assert_array_equal(dilate(tile, sequence), dilate(tile, full))
        np.testing.assert_array_equal(erode(tile > 0, sequence), ndi.binary_erosion(tile > 0, full, border_value=1))


def test_results_keep_the_dtype_and_shape_and_leave_the_input_alone() -> None:
    image = np.zeros((5, 7), np.uint8)
    image[2, 3] = 9
    before = image.copy()
    out = dilate(image, disk(1))
    assert out.dtype == np.uint8 and out.shape == (5, 7) and out.flags.c_contiguous
    np.testing.assert_array_equal(image, before)
    assert out.sum() == 9 * 5


def test_footprints_whose_rows_are_not_runs_through_the_centre_are_refused() -> None:
    ring = np.ones((3, 3), bool)
    ring[1, 1] = False
    with pytest.raises(ValueError, match="row 1"):
        dilate(np.zeros((4, 4), bool), ring)
    with pytest.raises(ValueError, match="2-D"):
        erode(np.zeros((4, 4, 1), bool), disk(1))
