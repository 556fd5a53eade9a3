"""The one tile planner (border and margin policies), crops, and the one window blender."""

from __future__ import annotations

import numpy as np
import pytest

from embedstore.imaging.tiling import (
    TileBlender,
    blend_tiles,
    crop,
    grid_origins,
    grid_starts,
    relabel,
    spline_window,
)

# ----------------------------------------------------------------------------------------------- planning


def test_grid_starts_step_by_stride_and_align_the_last_tile_to_the_border() -> None:
    assert grid_starts(100, 64, 32) == [0, 32, 36]
    assert grid_starts(1000, 256, 256) == [0, 256, 512, 744]
    assert grid_starts(512, 256, 256) == [0, 256]
    assert grid_starts(40, 64, 64) == [0]


def test_margin_grid_pads_a_margin_and_covers_the_image() -> None:
    starts = grid_starts(1000, 256, 128, policy="margin")
    margin = -starts[0]
    assert margin == 64
    # ceil((1000 + 128 - 256) / 128) + 1 = 8 tiles per side; padded side = 7 * 128 + 256
    assert len(grid_origins((1000, 1000), 256, 128, policy="margin")) == 64
    assert starts[-1] + 256 - starts[0] == 1152
    assert starts[-1] + 256 - 1000 >= margin  # at least the margin past the last pixel too
    assert np.all(np.diff(starts) == 128)


def test_margin_grid_of_an_image_smaller_than_a_tile_has_one_tile() -> None:
    assert grid_origins((100, 40), 256, 256, policy="margin") == [(0, 0)]


@pytest.mark.parametrize("policy", ["border", "margin"])
def test_grid_rejects_a_stride_above_the_tile(policy: str) -> None:
    with pytest.raises(ValueError, match="stride"):
        grid_starts(500, 256, 300, policy=policy)  # type: ignore[arg-type]


def test_grid_origins_are_row_major() -> None:
    assert grid_origins((100, 70), 64, 32) == [(y, x) for y in (0, 32, 36) for x in (0, 6)]


# ----------------------------------------------------------------------------------------------- cutting


def test_crop_zero_pads_where_the_window_leaves_the_image() -> None:
    image = np.arange(1, 5 * 6 + 1, dtype=np.int32).reshape(5, 6)
    window = crop(image, (-2, 3), 4)
    expected = np.zeros((4, 4), np.int32)
    expected[2:, :3] = image[:2, 3:]
    np.testing.assert_array_equal(window, expected)
    np.testing.assert_array_equal(crop(image, (1, 1), 3), image[1:4, 1:4])


def test_margin_tiles_see_the_image_mirrored_at_its_border() -> None:
    image = np.arange(30 * 20, dtype=np.float32).reshape(30, 20, 1)
    seen: list[np.ndarray] = []

    def record(tiles: np.ndarray) -> np.ndarray:
        seen.extend(tiles)
        return tiles.transpose(0, 3, 1, 2)

    blend_tiles(record, image, 16, 8, channels=1, policy="margin", batch_size=3)
    first, last = seen[0][..., 0], seen[-1][..., 0]
    m = 4  # (16 - 8) // 2: the first tile starts at (-4, -4)
    np.testing.assert_array_equal(first[m:, m:], image[:12, :12, 0])
    for k in range(m):  # row m - 1 - k mirrors image row k + 1 (the edge row is not repeated)
        np.testing.assert_array_equal(first[m - 1 - k, m:], image[k + 1, :12, 0])
        np.testing.assert_array_equal(first[m:, m - 1 - k], image[:12, k + 1, 0])
    y, x = grid_origins((30, 20), 16, 8, policy="margin")[-1]
    inside = (30 - y, 20 - x)  # the last tile sticks out past the bottom-right corner
    np.testing.assert_array_equal(last[:inside[0], :inside[1]], image[y:, x:, 0])
    np.testing.assert_array_equal(last[inside[0], :inside[1]], image[-2, x:, 0])


def test_border_tiles_of_blend_tiles_see_zeros_outside_the_image() -> None:
    image = np.ones((20, 20, 1), np.float32)
    seen: list[np.ndarray] = []
    blend_tiles(lambda t: seen.extend(t) or t.transpose(0, 3, 1, 2), image, 32, 32, channels=1, policy="border")
    (only,) = seen
    assert only[:20, :20].all() and not only[20:].any() and not only[:, 20:].any()


def test_relabel_splits_cut_pieces_keeps_touching_cells_apart_and_numbers_from_one() -> None:
    inst = np.zeros((6, 8), np.int32)
    inst[0:2, 0:2] = 7  # two pieces of id 7
    inst[4:6, 6:8] = 7
    inst[3, 2:4] = 9  # 9 and 4 touch along an edge
    inst[3, 4:6] = 4
    inst[5, 0] = 2  # diagonal-only neighbours of one id stay one cell (8-connectivity)
    inst[4, 1] = 2
    out = relabel(inst)
    assert out.dtype == np.int32
    assert sorted(np.unique(out)) == [0, 1, 2, 3, 4, 5]
    assert out[0, 0] != out[4, 6]
    assert out[3, 2] != out[3, 4]
    assert out[5, 0] == out[4, 1]


# ----------------------------------------------------------------------------------------------- windows


def test_spline_window_is_symmetric_positive_and_halves_sum_to_one() -> None:
    w = spline_window(256).astype(np.float64)
    assert np.all(w > 0) and w.max() <= 1.0
    np.testing.assert_allclose(w, w[::-1], atol=1e-7)
    np.testing.assert_allclose(w[:128] + w[128:], 1.0, atol=1e-6)  # two windows half a tile apart


def test_spline_window_follows_the_squared_spline() -> None:
    # size 4: pixel centres t = 1/8, 3/8, 5/8, 7/8 -> triangle a = 1/4, 3/4, 3/4, 1/4
    # a < 1/2: 2a^2 = 1/8; a >= 1/2: 1 - 2(1 - a)^2 = 7/8
    np.testing.assert_allclose(spline_window(4), [0.125, 0.875, 0.875, 0.125], atol=1e-7)


# ----------------------------------------------------------------------------------------------- blending


def test_uniform_blend_is_the_plain_mean_of_the_covering_tiles() -> None:
    rng = np.random.default_rng(1)
    shape, size = (20, 23), 8
    origins = [(0, 0), (3, 5), (12, 15), (5, 0), (-2, 17)]
    tiles = rng.normal(size=(len(origins), 2, size, size)).astype(np.float32)
    blender = TileBlender(shape, 2, "uniform", fill=(7.0, -7.0))
    blender.add_batch(tiles, origins)
    out = blender.result()
    for y in range(shape[0]):
        for x in range(shape[1]):
            values = [t[:, y - oy, x - ox] for t, (oy, ox) in zip(tiles, origins)
                      if 0 <= y - oy < size and 0 <= x - ox < size]
            expected = np.mean(values, axis=0) if values else np.array([7.0, -7.0])
            np.testing.assert_allclose(out[:, y, x], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("tile,stride", [(64, 40), (32, 32), (48, 20)])
def test_spline_blend_of_constant_maps_is_the_constant(tile: int, stride: int) -> None:
    shape = (100, 157)
    blender = TileBlender(shape, 2, "spline")
    for origin in grid_origins(shape, tile, stride, policy="margin"):
        blender.add(np.stack([np.full((tile, tile), 0.3), np.full((tile, tile), -0.7)]).astype(np.float32), origin)
    out = blender.result()
    np.testing.assert_allclose(out[0], 0.3, atol=1e-6)
    np.testing.assert_allclose(out[1], -0.7, atol=1e-6)


def test_uncovered_pixels_get_the_fill_of_their_channel() -> None:
    blender = TileBlender((6, 6), 3, "spline", fill=(0.0, 0.0, 1.0))
    blender.add(np.full((3, 2, 2), 0.5, np.float32), (1, 1))
    out = blender.result()
    np.testing.assert_allclose(out[:, 1:3, 1:3], 0.5)
    uncovered = np.ones((6, 6), bool)
    uncovered[1:3, 1:3] = False
    np.testing.assert_array_equal(out[0][uncovered], 0.0)
    np.testing.assert_array_equal(out[2][uncovered], 1.0)


def test_tiles_sticking_out_of_the_image_keep_only_their_inside_part() -> None:
    maps = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    blender = TileBlender((5, 5), 1, "spline")
    blender.add(maps, (-2, -1))  # top-left corner: rows 2-3, columns 1-3 of the tile land inside
    blender.add(maps, (3, 3))  # bottom-right: rows 0-1, columns 0-1 land inside
    out = blender.result()
    np.testing.assert_allclose(out[0, :2, :3], maps[0, 2:4, 1:4])
    np.testing.assert_allclose(out[0, 3:, 3:], maps[0, :2, :2])
    assert out[0, 2, 2] == 0.0  # covered by neither


def test_a_tile_outside_the_image_or_with_wrong_channels_is_refused() -> None:
    blender = TileBlender((5, 5), 2)
    with pytest.raises(ValueError, match="outside"):
        blender.add(np.zeros((2, 3, 3), np.float32), (5, 0))
    with pytest.raises(ValueError, match="2, h, w"):
        blender.add(np.zeros((3, 3, 3), np.float32), (0, 0))
    with pytest.raises(ValueError, match="one value per channel"):
        TileBlender((5, 5), 2, fill=(1.0,))


def test_overlapping_tiles_are_weighted_by_the_window() -> None:
    # Tiles alternately predict 0 and 1; where two overlap, the result is their window-weighted mean.
    starts = grid_starts(24, 8, 4, policy="margin")
    values = {s: float(k % 2) for k, s in enumerate(starts)}
    blender = TileBlender((8, 24), 1, "spline")
    for y in grid_starts(8, 8, 4, policy="margin"):
        for x in starts:
            blender.add(np.full((1, 8, 8), values[x], np.float32), (y, x))
    stitched = blender.result()[0]
    w = spline_window(8)
    for c in (0, 5, 11, 17):
        inside = [s for s in starts if 0 <= c - s < 8]
        expected = sum(w[c - s] * values[s] for s in inside) / sum(w[c - s] for s in inside)
        np.testing.assert_allclose(stitched[:, c], expected, atol=1e-6)
    assert np.any((stitched > 0.01) & (stitched < 0.99))  # blended, not a hard switch


def test_blend_tiles_of_constant_maps_stitches_back_to_the_constant() -> None:
    image = np.zeros((300, 517, 3), np.uint8)

    def constant(tiles: np.ndarray) -> np.ndarray:
        out = np.empty((len(tiles), 2, 64, 64), np.float32)
        out[:, 0], out[:, 1] = 0.3, -0.7
        return out

    stitched = blend_tiles(constant, image, 64, 40, channels=2, batch_size=5)  # uneven overlap
    assert stitched.shape == (2, 300, 517)
    np.testing.assert_allclose(stitched[0], 0.3, atol=1e-6)
    np.testing.assert_allclose(stitched[1], -0.7, atol=1e-6)


@pytest.mark.parametrize("tile,stride", [(64, 32), (64, 64), (48, 20)])
@pytest.mark.parametrize("policy", ["margin", "border"])
def test_tiling_and_stitching_a_known_map_is_exact(tile: int, stride: int, policy: str) -> None:
    known = np.random.default_rng(0).normal(size=(173, 250, 3)).astype(np.float32)
    stitched = blend_tiles(lambda tiles: tiles.transpose(0, 3, 1, 2), known, tile, stride, channels=3,
                           policy=policy, batch_size=7)  # type: ignore[arg-type]
    np.testing.assert_allclose(stitched, known.transpose(2, 0, 1), atol=1e-5)
