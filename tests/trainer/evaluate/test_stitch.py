"""`stitch` and the stitched blend: whole-image ground truth and maps rebuilt from tiles."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from embedstore.datasets import get_dataset
from embedstore.datasets.synthetic import render
from embedstore.imaging.tiling import relabel
from embedstore.trainer.evaluate import stitch_labels
from embedstore.trainer.evaluate.units import stitched_maps
from embedstore.trainer.inference.maps import MapBlender, TileMaps


@pytest.mark.parametrize("image_size, tile_size", [(160, 64), (256, 64)])
def test_stitched_ground_truth_equals_the_source_labels(image_size: int, tile_size: int) -> None:
    """Overlapping (160 = 64 + 64 + 32) and seam-only (256 = 4 x 64) tilings of synthetic images."""
    data = get_dataset("synthetic", None, tile_size=tile_size, n=2, image_size=image_size)
    tiles = [data.tile(i) for i in range(len(data))]
    for index in (0, 1):
        mine = [t for t in tiles if t.source == f"synthetic_he_{index:04d}"]
        inst, cls = stitch_labels([t.instance for t in mine], [t.origin for t in mine], mine[0].source_shape,
                                  [t.cls for t in mine])
        _, true_inst, true_cls = render("he", 0, index, image_size)
        np.testing.assert_array_equal(inst, relabel(true_inst))
        np.testing.assert_array_equal(cls, true_cls)


def test_stitched_ground_truth_of_a_real_consep_image_with_overlapping_tiles_is_exact(real_data: Path) -> None:
    data = get_dataset("consep", real_data / "consep", tile_size=256, stride=128, merge_types=False)
    by_source = defaultdict(list)
    for i in range(len(data)):
        tile = data.tile(i)
        if tile.source == "test_1":
            by_source[tile.source].append(tile)
    tiles = by_source["test_1"]
    inst, cls = stitch_labels([t.instance for t in tiles], [t.origin for t in tiles], tiles[0].source_shape,
                              [t.cls for t in tiles])
    _, true_inst, true_cls = next(s for s in data.sources if s.id == "test_1").load()
    np.testing.assert_array_equal(inst, relabel(true_inst))
    np.testing.assert_array_equal(cls[inst > 0], true_cls[inst > 0])


def test_stitching_rejoins_cells_cut_by_a_seam_but_not_cells_known_to_differ() -> None:
    image = np.zeros((7, 8), np.int32)
    image[1:3, 2:6] = 1  # crosses the seam at x = 4
    image[3:5, 1:5] = 2  # crosses it in rows 3-4 ...
    image[5, 1:4] = 2
    image[3:5, 5:7] = 3  # ... and touches cell 3 on the right, which meets cell 2 across the seam in row 5
    image[5, 4:7] = 3
    left, right = relabel(image[:, :4]), relabel(image[:, 4:])
    inst, _ = stitch_labels([left, right], [(0, 0), (0, 4)], (7, 8))
    np.testing.assert_array_equal(inst, relabel(image))


def test_blender_averages_overlapping_tiles_and_marks_uncovered_pixels_background() -> None:
    ones = TileMaps(np.full((3, 2, 2), 0.2, np.float32), np.ones((4, 2, 2), np.float32), None)
    threes = TileMaps(np.full((3, 2, 2), 0.4, np.float32), np.full((4, 2, 2), 3.0, np.float32), None)
    blender = MapBlender((3, 4), 0)
    blender.add(ones, (0, 0))
    blender.add(threes, (0, 1))
    out = blender.result()
    np.testing.assert_allclose(out.directions[0, 0], [1.0, 2.0, 3.0, 0.0])
    np.testing.assert_allclose(out.contour[:, 2, 0], [0.0, 0.0, 1.0])  # row 2 is covered by no tile


def test_stitched_maps_blend_the_tiles_at_their_origins() -> None:
    ones = TileMaps(np.full((3, 2, 2), 0.2, np.float32), np.ones((4, 2, 2), np.float32), None)
    threes = TileMaps(np.full((3, 2, 2), 0.4, np.float32), np.full((4, 2, 2), 3.0, np.float32), None)
    out = stitched_maps([ones, threes], [(0, 0), (0, 1)], (3, 4), 0)
    np.testing.assert_allclose(out.directions[0, 0], [1.0, 2.0, 3.0, 0.0])
    assert out.types is None and out.contour.shape == (3, 3, 4)
