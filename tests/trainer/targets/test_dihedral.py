"""Specification of dihedral target views: they equal the targets recomputed from the transformed labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from skimage.segmentation import expand_labels

from embedstore.imaging.dihedral import dihedral, inverse
from embedstore.trainer.targets.dihedral import channel_rule, dihedral_batch, dihedral_directions, dihedral_targets
from embedstore.trainer.targets.maps import Targets, compute_targets

VIEWS = range(8)


def _synthetic_labels() -> np.ndarray:
    """Non-square tile of touching and separate cells, border cells, slivers and an anti-diagonal cell."""
    rng = np.random.default_rng(7)
    seeds = np.zeros((48, 64), dtype=np.int32)
    seeds[rng.integers(0, 48, 30), rng.integers(0, 64, 30)] = np.arange(1, 31)
    labels = expand_labels(seeds, distance=4)
    labels[labels % 5 == 0] = 0  # separate some cells from their neighbours
    labels[20, 0:9] = 40  # 1-px-high sliver on the border
    labels[0:7, 63] = 41  # 1-px-wide sliver on the border
    labels[45, 60] = labels[46, 59] = labels[47, 58] = 42  # all pixels on one anti-diagonal
    return labels


def _assert_same(got: Targets, expected: Targets) -> None:
    np.testing.assert_array_equal(got.contour, expected.contour)
    np.testing.assert_array_equal(got.directions, expected.directions)
    np.testing.assert_array_equal(got.weight, expected.weight)
    if expected.types is None:
        assert got.types is None
    else:
        np.testing.assert_array_equal(got.types, expected.types)


@pytest.fixture(scope="module")
def consep(real_data: Path) -> tuple[np.ndarray, np.ndarray]:
    mat = scipy.io.loadmat(real_data / "consep/Test/Labels/test_1.mat")
    return mat["inst_map"], mat["type_map"]


@pytest.mark.parametrize("magnification", ["20x", "40x"])
@pytest.mark.parametrize("view", VIEWS)
def test_view_of_targets_equals_targets_of_the_view_on_synthetic_labels(view: int, magnification: str) -> None:
    labels = _synthetic_labels()
    classes = (labels % 3 + 1) * (labels > 0)
    base = compute_targets(labels, classes, magnification)
    expected = compute_targets(dihedral(labels, view), dihedral(classes, view), magnification)
    _assert_same(dihedral_targets(base, view), expected)


@pytest.mark.parametrize("origin", [(0, 0), (300, 500), (744, 744)])
def test_view_of_targets_equals_targets_of_the_view_on_consep_crops(
        consep: tuple[np.ndarray, np.ndarray], origin: tuple[int, int]) -> None:
    y, x = origin
    labels, classes = (m[y:y + 256, x:x + 256] for m in consep)
    base = compute_targets(labels, classes, "40x")
    for view in VIEWS:
        expected = compute_targets(dihedral(labels, view), dihedral(classes, view), "40x")
        _assert_same(dihedral_targets(base, view), expected)


def test_view_of_targets_equals_targets_of_the_view_on_cytodark_tile(real_data: Path) -> None:
    labels = np.array(Image.open(real_data / "cytodark0/ID14_Aud_Cortex_Tursiops_14_masks.png"))
    base = compute_targets(labels, magnification="20x")
    for view in VIEWS:
        _assert_same(dihedral_targets(base, view), compute_targets(dihedral(labels, view), magnification="20x"))


def test_flip_and_quarter_turn_mix_channels_by_the_hand_derived_rules() -> None:
    # flip: h -> -h, v -> v, tl -> -bl, bl -> -tl; turn: h -> v, v -> -h, tl -> -bl, bl -> tl
    for view, source, sign in ((4, [0, 1, 3, 2], [-1, 1, -1, -1]), (1, [1, 0, 3, 2], [1, -1, -1, 1]),
                               (2, [0, 1, 2, 3], [-1, -1, -1, -1]), (0, [0, 1, 2, 3], [1, 1, 1, 1])):
        got_source, got_sign = channel_rule(view)
        np.testing.assert_array_equal(got_source, source)
        np.testing.assert_array_equal(got_sign, sign)


@pytest.mark.parametrize("view", VIEWS)
def test_view_then_its_inverse_restores_the_targets(view: int) -> None:
    base = compute_targets(_synthetic_labels(), magnification="20x")
    _assert_same(dihedral_targets(dihedral_targets(base, view), inverse(view)), base)


def test_viewed_targets_are_contiguous_arrays() -> None:
    viewed = dihedral_targets(compute_targets(_synthetic_labels(), _synthetic_labels() > 0), 5)
    for array in (viewed.contour, viewed.directions, viewed.weight, viewed.types):
        assert array.flags.c_contiguous


def test_batch_views_match_per_sample_views() -> None:
    rng = np.random.default_rng(0)
    maps = rng.uniform(-1, 1, size=(6, 4, 16, 16)).astype(np.float32)
    views = np.array([0, 3, 5, 3, 7, 2])
    batch = dihedral_batch(maps, views, directions=True)
    plain = dihedral_batch(maps, views)
    for i, view in enumerate(views):
        np.testing.assert_array_equal(batch[i], dihedral_directions(maps[i], view))
        np.testing.assert_array_equal(plain[i], dihedral(maps[i], view, axes=(1, 2)))


def test_batch_of_odd_views_of_non_square_maps_swaps_height_and_width() -> None:
    maps = np.arange(2 * 3 * 5).reshape(2, 3, 5)
    out = dihedral_batch(maps, np.array([1, 7]))
    assert out.shape == (2, 5, 3)
    np.testing.assert_array_equal(out[1], dihedral(maps[1], 7))


def test_batch_refuses_odd_and_even_views_of_non_square_maps() -> None:
    with pytest.raises(ValueError, match="non-square"):
        dihedral_batch(np.zeros((2, 3, 5)), np.array([0, 1]))
