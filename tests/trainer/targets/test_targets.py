"""Specification of the training targets: 3-class map, direction maps, regression weight."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from scipy import ndimage
from skimage import morphology

from embedstore.errors import EmbedstoreError
from embedstore.trainer.targets.maps import (
    BACKGROUND,
    BODY,
    BOUNDARY,
    _FOOTPRINTS,
    Targets,
    compute_targets,
    direction_maps,
    regression_weight,
    three_class_map,
)


def _pair(gap: int, shape: tuple[int, int] = (12, 18), top: int = 3) -> np.ndarray:
    """Cell 1 in cols 2..7 and cell 2 starting ``gap`` background columns later, 6 columns wide."""
    labels = np.zeros(shape, dtype=np.int32)
    labels[top:top + 6, 2:8] = 1
    labels[top:top + 6, 8 + gap:14 + gap] = 2
    return labels


@pytest.fixture(scope="module")
def consep_crop(real_data: Path) -> np.ndarray:
    return scipy.io.loadmat(real_data / "consep/Test/Labels/test_1.mat")["inst_map"][300:556, 500:756]


@pytest.fixture(scope="module")
def cytodark_tile(real_data: Path) -> np.ndarray:
    return np.array(Image.open(real_data / "cytodark0/ID14_Aud_Cortex_Tursiops_14_masks.png"))  # uint8 ids


# 128 x 160 windows of CoNSeP Train label maps, each the densest of its image (40-65 cells, many touching)
_TRAIN_WINDOWS = {"train_1": (384, 256), "train_8": (256, 448), "train_13": (64, 832), "train_19": (320, 512),
                  "train_22": (320, 448)}


@pytest.fixture(scope="module")
def consep_train(real_data: Path) -> dict[str, np.ndarray]:
    """The ``_TRAIN_WINDOWS`` crops, int32 and Fortran-ordered as MATLAB files load."""
    return {name: scipy.io.loadmat(real_data / f"consep/Train/Labels/{name}.mat")["inst_map"][y:y + 128, x:x + 160]
            for name, (y, x) in _TRAIN_WINDOWS.items()}


# ----------------------------------------------------------------------------------------- direction maps
def test_rectangle_ramps_match_hand_values() -> None:
    labels = np.zeros((7, 9), dtype=np.int32)
    labels[2:5, 2:7] = 4  # 3 rows x 5 columns
    h, v, tl, bl = direction_maps(labels)[:, 2:5, 2:7]
    np.testing.assert_array_equal(h, np.tile([-1, -0.5, 0, 0.5, 1], (3, 1)))
    np.testing.assert_array_equal(v, np.tile([[-1], [0], [1]], (1, 5)))
    third = 1 / 3  # tl ramps along row+col (0..6), bl along col-row (-2..4)
    np.testing.assert_allclose(tl, [[-1, -2 * third, -third, 0, third],
                                    [-2 * third, -third, 0, third, 2 * third],
                                    [-third, 0, third, 2 * third, 1]], atol=1e-7)
    np.testing.assert_allclose(bl, [[-third, 0, third, 2 * third, 1],
                                    [-2 * third, -third, 0, third, 2 * third],
                                    [-1, -2 * third, -third, 0, third]], atol=1e-7)


def test_direction_maps_are_zero_on_background_and_within_unit_range(consep_crop: np.ndarray) -> None:
    maps = direction_maps(consep_crop)
    assert maps.shape == (4, 256, 256) and maps.dtype == np.float32
    assert not maps[:, consep_crop == 0].any()
    assert maps.min() == -1 and maps.max() == 1


def test_diagonal_ramps_are_rescaled_over_the_instance_pixels() -> None:
    labels = np.zeros((5, 5), dtype=np.int32)
    labels[1, 2] = labels[2, 1:4] = labels[3, 2] = 1  # a plus: row+col spans 3..5, the box 2..6
    _, _, tl, bl = direction_maps(labels)
    assert tl[1, 2] == tl[2, 1] == -1 and tl[2, 2] == 0 and tl[2, 3] == tl[3, 2] == 1
    assert bl[3, 2] == bl[2, 1] == -1 and bl[2, 2] == 0 and bl[1, 2] == bl[2, 3] == 1


@pytest.mark.parametrize("box", [(slice(2, 3), slice(1, 6)), (slice(1, 6), slice(3, 4)), (slice(2, 3), slice(2, 3))],
                         ids=["one-row", "one-column", "one-pixel"])
def test_cells_one_pixel_high_or_wide_get_zero_directions(box: tuple[slice, slice]) -> None:
    labels = np.zeros((7, 7), dtype=np.int32)
    labels[box] = 1
    labels[5:7, 5:7] = 2  # a normal neighbour still gets its ramps
    maps = direction_maps(labels)
    assert not maps[:, labels == 1].any()
    assert np.array_equal(maps[0, 5:7, 5:7], [[-1, 1], [-1, 1]])


def test_cell_on_one_antidiagonal_gets_the_midpoint_on_tl() -> None:
    labels = np.zeros((4, 4), dtype=np.int32)
    labels[1, 2] = labels[2, 1] = 1  # row+col is 3 on both pixels
    h, v, tl, bl = direction_maps(labels)
    assert tl[1, 2] == tl[2, 1] == 0
    assert (h[1, 2], h[2, 1], v[1, 2], v[2, 1], bl[1, 2], bl[2, 1]) == (1, -1, -1, 1, 1, -1)


def test_cell_cut_by_the_tile_border_ramps_over_its_visible_part() -> None:
    labels = np.zeros((6, 6), dtype=np.int32)
    labels[0:3, 2:6] = 1  # touches the top and right borders
    h, v, _, _ = direction_maps(labels)
    np.testing.assert_allclose(h[0, 2:6], [-1, -1 / 3, 1 / 3, 1], atol=1e-7)
    np.testing.assert_array_equal(v[0:3, 5], [-1, 0, 1])


def test_diagonals_equal_the_reference_padded_square_construction(consep_crop: np.ndarray) -> None:
    """The reference pads each box to a square (extra pixel on the far side) before min-max rescaling."""
    expected = np.zeros((2, *consep_crop.shape))
    for i in np.unique(consep_crop)[1:]:
        rows, cols = np.nonzero(consep_crop == i)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        if height == 1 or width == 1:
            continue
        side = max(height, width)
        r = rows - rows.min() + (side - height) // 2
        c = cols - cols.min() + (side - width) // 2
        for channel, raw in enumerate(((r + c) / (2 * (side - 1)), ((side - 1 - r) + c) / (2 * (side - 1)))):
            spread = raw.max() - raw.min()
            expected[channel, rows, cols] = -1 + 2 * (raw - raw.min()) / spread if spread else 0
    np.testing.assert_allclose(direction_maps(consep_crop)[2:], expected, atol=1e-6)


# ---------------------------------------------------------------------------------------- 3-class map
@pytest.mark.parametrize("magnification", ["20x", "40x"])
def test_isolated_cell_has_body_and_no_boundary(magnification: str) -> None:
    labels = np.zeros((15, 15), dtype=np.int32)
    labels[4:10, 3:11] = 7
    out = three_class_map(labels, magnification)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.where(labels > 0, BODY, BACKGROUND))


@pytest.mark.parametrize(("magnification", "band"), [("20x", slice(7, 9)), ("40x", slice(6, 10))])
def test_touching_pair_gets_a_band_on_both_sides_of_the_interface(magnification: str, band: slice) -> None:
    labels = _pair(gap=0)  # interface between columns 7 and 8
    expected = np.where(labels > 0, BODY, BACKGROUND)
    expected[3:9, band] = BOUNDARY  # 1 px each side at 20x, 2 px at 40x
    np.testing.assert_array_equal(three_class_map(labels, magnification), expected)


def test_nearly_touching_pair_gets_boundary_and_its_gap_stays_background() -> None:
    labels = _pair(gap=1)  # column 8 is background between the cells
    expected = np.where(labels > 0, BODY, BACKGROUND)
    expected[3:9, 7] = expected[3:9, 9] = BOUNDARY
    np.testing.assert_array_equal(three_class_map(labels, "20x"), expected)


@pytest.mark.parametrize(("magnification", "gap"), [("20x", 3), ("40x", 6)])
def test_separated_pair_has_no_boundary(magnification: str, gap: int) -> None:
    labels = _pair(gap=gap, shape=(12, 24))
    np.testing.assert_array_equal(three_class_map(labels, magnification), np.where(labels > 0, BODY, BACKGROUND))


def test_touching_pair_on_the_tile_border_keeps_its_band_up_to_the_edge() -> None:
    labels = _pair(gap=0, top=0)
    out = three_class_map(labels, "20x")
    assert (out[0:6, 7:9] == BOUNDARY).all()
    assert not (out[:, :7] == BOUNDARY).any() and not (out[:, 9:] == BOUNDARY).any()


def _from_row_widths(widths: list[int]) -> np.ndarray:
    size = max(widths)
    return np.array([[abs(c - size // 2) <= w // 2 for c in range(size)] for w in widths])


@pytest.mark.parametrize(("table", "name", "widths"), [
    (20, "gap", [5] * 5), (20, "near", [3] * 3), (20, "near_wide", [5] * 5), (20, "erode", [3] * 3),
    (40, "gap", [5, 7, 9, 9, 9, 9, 9, 7, 5]),  # MATLAB strel('disk', 5)
    (40, "near", [1, 3, 5, 3, 1]),  # strel('disk', 2)
    (40, "near_wide", [7, 9, 11, 11, 11, 11, 11, 11, 11, 9, 7]),  # strel('disk', 6)
    (40, "erode", [5] * 5)])
def test_footprints_are_the_reference_structuring_elements(table: int, name: str, widths: list[int]) -> None:
    got = morphology.footprint_from_sequence(getattr(_FOOTPRINTS[table], name))
    np.testing.assert_array_equal(got, _from_row_widths(widths))


def test_fragment_growth_uses_the_reference_sizes_and_elements() -> None:
    full = morphology.footprint_from_sequence
    grow20, grow40 = _FOOTPRINTS[20].grow, _FOOTPRINTS[40].grow
    assert [below for below, _ in grow20] == [2, 4] and [below for below, _ in grow40] == [6, 11]
    np.testing.assert_array_equal(full(grow20[0][1]), _from_row_widths([3, 3, 3]))
    np.testing.assert_array_equal(full(grow20[1][1]), _from_row_widths([1, 3, 1]))
    np.testing.assert_array_equal(full(grow40[0][1]), _from_row_widths([1, 3, 5, 3, 1]))
    np.testing.assert_array_equal(full(grow40[1][1]), _from_row_widths([3, 3, 3]))
    assert (_FOOTPRINTS[20].hole_below, _FOOTPRINTS[40].hole_below) == (3, 8)


def _reference_three_class(labels: np.ndarray, table: int) -> np.ndarray:
    """The CISCA steps written plainly: one dilation per cell, skimage defaults (reflect borders)."""
    fp = _FOOTPRINTS[table]
    full = morphology.footprint_from_sequence
    cells = labels > 0
    out = np.ones(labels.shape, dtype=np.uint8)
    closed = morphology.black_tophat(labels, full(fp.gap)) > 0
    out[~cells & ~closed] = 2
    out[~cells & closed] = 3
    count = sum(morphology.dilation((labels == j).astype(np.uint8), full(fp.near)).astype(int)
                for j in np.unique(labels)[1:])
    count_wide = sum(morphology.dilation((labels == j).astype(np.uint8), full(fp.near_wide)).astype(int)
                     for j in np.unique(labels)[1:])
    holes = fp.hole_below - 1
    touching = morphology.remove_small_holes((count > 1) & cells, max_size=holes)
    wide = morphology.remove_small_holes((count_wide > 1) & cells, max_size=holes)
    for below, grow in fp.grow:
        small = touching ^ morphology.remove_small_objects(touching & cells, max_size=below - 1)
        grown = morphology.dilation(small.astype(np.uint8), full(grow)).astype(bool) & cells
        touching = morphology.remove_small_holes(touching | grown, max_size=holes)
    out[touching] = 0
    eroded = morphology.erosion(wide.astype(np.uint8), full(fp.erode))
    out[(wide - morphology.reconstruction(eroded, wide.astype(np.uint8))) > 0] = 0
    for value, below in ((3, 3), (1, 2)):
        near = morphology.dilation((out == 0).astype(np.uint8), full(fp.near)).astype(bool)
        tiny = (out == value) & ~morphology.remove_small_objects(out == value, max_size=below - 1)
        out[tiny & near] = 0
    zero = out == 0
    out[zero & ~morphology.remove_small_objects(zero, max_size=1, connectivity=2)] = 1
    out[out == 3] = 2
    return out


@pytest.mark.parametrize("magnification", [20, 40])
def test_three_class_map_matches_the_reference_steps_on_real_labels(
        consep_crop: np.ndarray, cytodark_tile: np.ndarray, magnification: int) -> None:
    for labels in (consep_crop[:128, :160], cytodark_tile):
        out = three_class_map(labels, magnification)
        np.testing.assert_array_equal(out, _reference_three_class(labels, magnification))
        assert (out == BOUNDARY).any() and (out == BODY).any() and (out == BACKGROUND).any()


@pytest.mark.parametrize("magnification", [20, 40])
@pytest.mark.parametrize("name", sorted(_TRAIN_WINDOWS))
def test_three_class_map_matches_the_reference_steps_on_consep_train_labels(
        consep_train: dict[str, np.ndarray], name: str, magnification: int) -> None:
    labels = consep_train[name]
    out = three_class_map(labels, magnification)
    np.testing.assert_array_equal(out, _reference_three_class(labels, magnification))
    assert (out == BOUNDARY).sum() > 100 and (out == BODY).any() and (out == BACKGROUND).any()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int64, np.uint64])
def test_targets_do_not_depend_on_the_id_dtype_or_values(consep_train: dict[str, np.ndarray], dtype: type) -> None:
    labels = consep_train["train_1"]
    compact = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)  # ids 0..n-1 fit every dtype
    spread = compact.astype(dtype) * dtype(np.iinfo(dtype).max // int(compact.max()))
    spread[compact == compact.max()] = np.iinfo(dtype).max  # ids spread up to the dtype's maximum
    for magnification in ("20x", "40x"):
        np.testing.assert_array_equal(three_class_map(spread, magnification), three_class_map(labels, magnification))
    np.testing.assert_array_equal(direction_maps(spread), direction_maps(labels))


@pytest.mark.parametrize("magnification", ["20x", "20X", 20, 25.0, " 29x "])
def test_magnifications_below_30x_use_the_20x_footprints(magnification: str | float) -> None:
    labels = _pair(gap=0)
    np.testing.assert_array_equal(three_class_map(labels, magnification), three_class_map(labels, "20x"))
    assert not np.array_equal(three_class_map(labels, magnification), three_class_map(labels, "40x"))


@pytest.mark.parametrize("magnification", ["40x", 40, 30, "63x"])
def test_magnifications_from_30x_use_the_40x_footprints(magnification: str | float) -> None:
    labels = _pair(gap=0)
    np.testing.assert_array_equal(three_class_map(labels, magnification), three_class_map(labels, "40x"))


@pytest.mark.parametrize("magnification", ["abc", "0x", -20, ""])
def test_invalid_magnification_is_a_user_error(magnification: str | float) -> None:
    with pytest.raises(EmbedstoreError, match="magnification"):
        three_class_map(_pair(gap=0), magnification)


def test_direction_maps_equal_the_per_instance_formula_bit_for_bit(consep_train: dict[str, np.ndarray]) -> None:
    for labels in consep_train.values():
        expected = np.zeros((4, *labels.shape), dtype=np.float32)
        for i in np.unique(labels)[1:]:
            rows, cols = np.nonzero(labels == i)
            if np.ptp(rows) == 0 or np.ptp(cols) == 0:
                continue
            for channel, x in enumerate((cols, rows, rows + cols, cols - rows)):
                lo, hi = x.min(), x.max()
                expected[channel, rows, cols] = (2 * x - lo - hi).astype(np.float32) / np.float32(max(hi - lo, 1))
        np.testing.assert_array_equal(direction_maps(labels).view(np.uint32), expected.view(np.uint32))  # +0 too


# ---------------------------------------------------------------------------------- regression weight
@pytest.mark.parametrize("radius", [6, 2])
def test_regression_weight_is_one_within_radius_of_a_cell(radius: int) -> None:
    labels = np.zeros((21, 21), dtype=np.int32)
    labels[10, 10] = 1
    dy, dx = np.mgrid[-10:11, -10:11]
    expected = np.where(dy**2 + dx**2 <= radius**2, 1.0, 0.05).astype(np.float32)
    weight = regression_weight(labels, radius=radius)
    assert weight.dtype == np.float32
    np.testing.assert_array_equal(weight, expected)


def test_regression_weight_is_one_on_the_disk_dilation_of_real_cells(consep_crop: np.ndarray) -> None:
    near = ndimage.binary_dilation(consep_crop > 0, structure=morphology.disk(6).astype(bool))
    np.testing.assert_array_equal(regression_weight(consep_crop), np.where(near, 1, 0.05).astype(np.float32))


def test_regression_weight_uses_the_low_value_far_from_cells() -> None:
    labels = np.zeros((30, 30), dtype=np.int32)
    labels[0:3, 0:3] = 1
    weight = regression_weight(labels, radius=4, low=0.2)
    assert weight[29, 29] == np.float32(0.2) and weight[6, 2] == 1 and weight[7, 2] == np.float32(0.2)


# ------------------------------------------------------------------------------------ compute_targets
def test_compute_targets_bundles_all_maps(consep_crop: np.ndarray) -> None:
    classes = (consep_crop % 4 + 1) * (consep_crop > 0)
    targets = compute_targets(consep_crop, classes, "40x")
    assert isinstance(targets, Targets)
    np.testing.assert_array_equal(targets.contour, three_class_map(consep_crop, "40x"))
    np.testing.assert_array_equal(targets.directions, direction_maps(consep_crop))
    np.testing.assert_array_equal(targets.weight, regression_weight(consep_crop))
    assert targets.types.dtype == np.uint8
    np.testing.assert_array_equal(targets.types, classes)


def test_compute_targets_without_classes_has_no_types() -> None:
    assert compute_targets(_pair(gap=0)).types is None


def test_empty_tile_is_all_background_with_low_weight() -> None:
    targets = compute_targets(np.zeros((8, 10), dtype=np.int64))
    assert (targets.contour == BACKGROUND).all()
    assert not targets.directions.any()
    assert (targets.weight == np.float32(0.05)).all()


@pytest.mark.parametrize("labels", [np.zeros((4, 4, 1), np.int32), np.zeros((4, 4), np.float32),
                                    np.zeros((4, 4), bool), np.full((4, 4), -1)],
                         ids=["3-d", "float", "bool", "negative"])
def test_invalid_instance_map_is_a_user_error(labels: np.ndarray) -> None:
    with pytest.raises(EmbedstoreError, match="instance map"):
        compute_targets(labels)


@pytest.mark.parametrize("classes", [np.zeros((5, 5), np.int32), np.full((6, 6), 300)], ids=["shape", "range"])
def test_invalid_class_map_is_a_user_error(classes: np.ndarray) -> None:
    with pytest.raises(EmbedstoreError, match="class map"):
        compute_targets(np.zeros((6, 6), np.int32), classes)
