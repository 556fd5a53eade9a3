"""One class per instance from the class softmax (trainer/postprocess/classify.py)."""

from __future__ import annotations

import numpy as np
import pytest

from embedstore.errors import EmbedstoreError
from embedstore.trainer.postprocess import classify_instances


def test_classify_instances_sums_probabilities_and_skips_a_winning_background() -> None:
    instance = np.zeros((4, 6), np.int32)
    instance[:, :2] = 1
    instance[:, 2:4] = 2
    instance[:, 4:] = 5
    type_prob = np.zeros((4, 4, 6), np.float32)  # background + 3 classes
    type_prob[:, :, :2] = np.array([0.1, 0.2, 0.6, 0.1])[:, None, None]  # -> class 2
    type_prob[:, :, 2:4] = np.array([0.7, 0.05, 0.1, 0.15])[:, None, None]  # background wins -> class 3
    type_prob[:, :, 4:] = np.array([0.0, 0.5, 0.3, 0.2])[:, None, None]
    type_prob[:, 0, 4:] = np.array([0.0, 0.0, 1.0, 0.0])[:, None]  # instance 5: sums 1.5 vs 1.9 -> class 2
    class_map, per_instance = classify_instances(instance, type_prob)
    assert class_map.dtype == np.uint8
    np.testing.assert_array_equal(class_map, np.where(instance == 2, 3, 2) * (instance > 0))
    assert per_instance.keys() == {1, 2, 5}
    assert per_instance[1] == (2, pytest.approx(0.6))
    assert per_instance[2] == (3, pytest.approx(0.15))
    assert per_instance[5] == (2, pytest.approx((1.0 * 2 + 0.3 * 6) / 8))


def test_classify_instances_of_an_empty_map() -> None:
    class_map, per_instance = classify_instances(np.zeros((3, 3), np.int32), np.ones((2, 3, 3)))
    assert not class_map.any() and per_instance == {}


def test_classify_instances_refuses_bad_inputs() -> None:
    with pytest.raises(EmbedstoreError, match="type_prob"):
        classify_instances(np.zeros((3, 3), np.int32), np.ones((2, 3, 4)))
    with pytest.raises(EmbedstoreError, match="instance map"):
        classify_instances(np.full((3, 3), -1), np.ones((2, 3, 3)))
