"""`jaccard`: AJI (one-to-many), AJI+ (one-to-one) and Dice on hand-counted maps and empty cases."""

import numpy as np
import pytest

from embedstore.trainer.metrics import aggregated_jaccard_index, aggregated_jaccard_index_plus, dice


def test_aji_lets_one_prediction_serve_two_truths_and_aji_plus_does_not(row_map):
    true = np.repeat(row_map((7, 0, 4), (3, 4, 8), length=8), 2, axis=0)
    pred = np.repeat(row_map((1, 0, 8), length=8), 2, axis=0)
    # AJI: both GT take the merged cell: (4 + 4) / (8 + 8)
    assert aggregated_jaccard_index(true, pred) == pytest.approx(8 / 16)
    # AJI+: one GT paired (4 / 8), the other's 4 pixels join the union
    assert aggregated_jaccard_index_plus(true, pred) == pytest.approx(4 / 12)


def test_aji_adds_unused_predictions_to_the_union(dots):
    true = dots((4, 4), (0, 0, 5))
    true[0, 1] = 5
    pred = np.where(true > 0, 9, 0)
    pred[3, 3] = 4  # a one-pixel false positive
    assert aggregated_jaccard_index(true, pred) == pytest.approx(2 / 3)
    assert aggregated_jaccard_index_plus(true, pred) == pytest.approx(2 / 3)


def test_aji_on_shifted_touching_instances(row_map):
    true = np.repeat(row_map((7, 0, 4), (3, 4, 8), length=8), 2, axis=0)
    pred = np.repeat(row_map((1, 0, 5), (2, 5, 8), length=8), 2, axis=0)
    assert aggregated_jaccard_index(true, pred) == pytest.approx((8 + 6) / (10 + 8))


def test_aji_empty_cases(dots):
    empty = np.zeros((3, 3), np.int32)
    some = dots((3, 3), (1, 1, 4))
    assert np.isnan(aggregated_jaccard_index(empty, empty))
    assert np.isnan(aggregated_jaccard_index_plus(empty, empty))
    assert aggregated_jaccard_index(some, empty) == 0.0
    assert aggregated_jaccard_index_plus(empty, some) == 0.0


def test_dice_counts_foreground_only(row_map):
    true = row_map((1, 0, 2), (2, 2, 4), length=8)
    pred = row_map((5, 2, 6), length=8)  # overlaps 2 of 4 foreground pixels
    assert dice(true, pred) == pytest.approx(2 * 2 / (4 + 4))


def test_dice_empty_cases(dots):
    empty = np.zeros((3, 3), np.int32)
    assert np.isnan(dice(empty, empty))
    assert dice(empty, dots((3, 3), (0, 0, 1))) == 0.0
