"""`counts`: majority class per instance, per-image class counts and CoNIC's R2."""

import numpy as np
import pytest

from embedstore.trainer.metrics import count_r2, counts_per_class, instance_classes, instance_counts


def test_count_r2_matches_the_direct_formula():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 30, size=(9, 3)).astype(float)
    yhat = y + rng.normal(0, 3, size=y.shape)
    r = count_r2(y, yhat)
    direct = [1 - ((y[:, c] - yhat[:, c]) ** 2).sum() / ((y[:, c] - y[:, c].mean()) ** 2).sum() for c in range(3)]
    assert r["r2_per_class"] == pytest.approx(direct)
    assert r["r2"] == pytest.approx(np.mean(direct))


def test_count_r2_hand_value():
    # residual 1, total variance 2
    assert count_r2([1, 2, 3], [1, 2, 4])["r2"] == pytest.approx(0.5)


def test_count_r2_constant_truth_follows_sklearn():
    r = count_r2([[2, 2], [2, 2]], [[2, 2], [2, 3]])
    assert list(r["r2_per_class"]) == [1.0, 0.0]


def test_count_r2_needs_two_images():
    assert np.isnan(count_r2([3], [3])["r2"])


def test_instance_counts_use_the_majority_class_of_each_instance(row_map):
    inst = row_map((5, 0, 3), (9, 3, 6), length=6)
    cls = np.array([[2, 2, 1, 1, 0, 0]], np.uint8)  # 5 -> 2 (2 of 3), 9 -> 1 (class beats background)
    assert list(instance_classes(inst, cls)[1]) == [2, 1]
    assert list(instance_counts(inst, cls, n_classes=3)) == [1, 1, 0]


def test_counts_per_class_ignore_background_and_classes_beyond_n():
    assert list(counts_per_class([0, 1, 3, 3, 4], n_classes=3)) == [1, 0, 2]
