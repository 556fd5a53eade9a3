"""Maps -> cells, the call evaluation and prediction share (trainer/postprocess/cells.py)."""

from __future__ import annotations

import numpy as np
import pytest

from embedstore.trainer.postprocess import (
    Cells,
    PostprocessParams,
    cells_from_maps,
    classify_instances,
    instances_from_maps,
)
from embedstore.trainer.targets.oracle import realistic_maps


@pytest.fixture(scope="module")
def maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model-like maps of three cells (two touching) and a class softmax: cells 1-2 class 2, cell 3 class 1."""
    instance = np.zeros((48, 64), np.int32)
    instance[6:22, 6:22] = 1
    instance[6:22, 22:38] = 2
    instance[28:44, 40:58] = 3
    contour, directions = realistic_maps(instance, "40x", np.random.default_rng(0))
    types = np.full((3, 48, 64), 0.05, np.float32)
    types[0, instance == 0] = 0.9
    types[2, (instance == 1) | (instance == 2)] = 0.9
    types[1, instance == 3] = 0.9
    return contour, directions, types / types.sum(axis=0)


def test_typed_cells_are_the_instances_with_their_classified_map(maps) -> None:
    contour, directions, types = maps
    params = PostprocessParams.for_dataset("40x", min_size=10)
    cells = cells_from_maps(contour, directions, types, params)
    expected = instances_from_maps(contour, directions, params)
    assert isinstance(cells, Cells) and cells.instances.max() == 3
    np.testing.assert_array_equal(cells.instances, expected)
    class_map, per_instance = classify_instances(expected, types)
    np.testing.assert_array_equal(cells.classes, class_map)
    assert cells.per_instance == per_instance
    assert sorted(c for c, _ in cells.per_instance.values()) == [1, 2, 2]


def test_untyped_cells_get_class_1_and_their_mean_foreground_probability(maps) -> None:
    contour, directions, _ = maps
    cells = cells_from_maps(contour, directions, None, PostprocessParams.for_dataset("40x", min_size=10))
    assert cells.classes is None
    assert cells.per_instance.keys() == set(range(1, int(cells.instances.max()) + 1))
    for i, (cls, prob) in cells.per_instance.items():
        inside = cells.instances == i
        assert cls == 1
        assert prob == pytest.approx(float((contour[0] + contour[1])[inside].mean()), rel=1e-6)


def test_maps_without_cells_give_no_cells() -> None:
    contour = np.zeros((3, 16, 16), np.float32)
    contour[2] = 1
    cells = cells_from_maps(contour, np.zeros((4, 16, 16), np.float32), None, PostprocessParams.for_dataset("40x"))
    assert not cells.instances.any() and cells.per_instance == {}
