"""`panoptic`: PQ of one image (matching, thresholds, empty cases), the count-level formula and per-class counts."""

import numpy as np
import pytest

from embedstore.trainer.metrics import class_match_counts, panoptic_quality, pq_from_counts
from embedstore.trainer.metrics.panoptic import restrict_to_class


def test_pq_counts_one_match_one_miss_one_false_positive_with_non_contiguous_ids(row_map):
    true = row_map((7, 0, 8), (3, 12, 16), length=24)
    pred = row_map((1000, 0, 6), (5, 20, 24), length=24)
    r = panoptic_quality(true, pred)
    # id 7 vs 1000: inter 6, union 8 -> IoU 0.75; id 3 missed; id 5 spurious
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 1)
    assert r["iou_sum"] == pytest.approx(0.75)
    assert r["dq"] == pytest.approx(1 / (1 + 0.5 + 0.5))
    assert r["sq"] == pytest.approx(0.75)
    assert r["pq"] == pytest.approx(0.5 * 0.75)


def test_pq_pair_at_exactly_half_iou_is_not_a_match(row_map):
    true = row_map((1, 0, 100), length=100)
    pred = row_map((2, 0, 50), length=100)  # 50 / 100 = 0.5 exactly
    r = panoptic_quality(true, pred)
    assert (r["tp"], r["fp"], r["fn"]) == (0, 1, 1)
    assert r["pq"] == 0.0


def test_pq_pair_just_above_half_iou_is_a_match(row_map):
    true = row_map((1, 0, 100), length=100)
    pred = row_map((2, 0, 51), length=100)  # 51 / 100
    r = panoptic_quality(true, pred)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 0, 0)
    assert r["pq"] == pytest.approx(0.51)


def test_pq_below_half_threshold_uses_the_maximum_iou_assignment_not_greedy(row_map):
    # A=[0,10) B=[10,14); P=[4,14) Q=[0,4): IoU(A,P)=6/14, IoU(B,P)=4/10, IoU(A,Q)=4/10.
    # Greedy takes A-P (0.43) and stops; the assignment takes A-Q + B-P (0.8 in total).
    true = row_map((1, 0, 10), (2, 10, 14), length=14)
    pred = row_map((8, 4, 14), (9, 0, 4), length=14)
    r = panoptic_quality(true, pred, match_iou=0.3)
    assert (r["tp"], r["fp"], r["fn"]) == (2, 0, 0)
    assert r["iou_sum"] == pytest.approx(0.8)
    assert r["pq"] == pytest.approx(0.4)


def test_pq_default_threshold_rejects_the_same_low_iou_pairs(row_map):
    true = row_map((1, 0, 10), (2, 10, 14), length=14)
    pred = row_map((8, 4, 14), (9, 0, 4), length=14)
    assert panoptic_quality(true, pred)["tp"] == 0


def test_pq_of_one_pixel_instances(dots):
    true = dots((4, 4), (0, 0, 1000), (3, 3, 4))
    pred = dots((4, 4), (0, 0, 2), (3, 2, 9))
    r = panoptic_quality(true, pred)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 1)
    assert r["sq"] == 1.0


def test_pq_touching_instances_are_scored_separately(row_map):
    # two touching 2x4 GT cells; prediction moves their border by one column
    true = np.repeat(row_map((7, 0, 4), (3, 4, 8), length=8), 2, axis=0)
    pred = np.repeat(row_map((1, 0, 5), (2, 5, 8), length=8), 2, axis=0)
    r = panoptic_quality(true, pred)
    assert r["tp"] == 2
    assert r["sq"] == pytest.approx((8 / 10 + 6 / 8) / 2)


def test_pq_merged_prediction_of_two_touching_cells_matches_neither(row_map):
    true = np.repeat(row_map((7, 0, 4), (3, 4, 8), length=8), 2, axis=0)
    pred = np.repeat(row_map((1, 0, 8), length=8), 2, axis=0)  # IoU 0.5 with each
    r = panoptic_quality(true, pred)
    assert (r["tp"], r["fp"], r["fn"]) == (0, 1, 2)


def test_pq_with_empty_truth_is_zero_and_counts_false_positives(dots):
    pred = dots((4, 4), (1, 1, 5), (2, 3, 6))
    r = panoptic_quality(np.zeros((4, 4), np.int32), pred)
    assert (r["tp"], r["fp"], r["fn"], r["dq"], r["sq"], r["pq"]) == (0, 2, 0, 0.0, 0.0, 0.0)


def test_pq_with_empty_prediction_is_zero_and_counts_misses(dots):
    true = dots((4, 4), (1, 1, 5))
    r = panoptic_quality(true, np.zeros((4, 4), np.int32))
    assert (r["tp"], r["fp"], r["fn"], r["pq"]) == (0, 0, 1, 0.0)


@pytest.mark.parametrize("match_iou", [0.5, 0.3])
def test_pq_with_both_maps_empty_is_nan(match_iou):
    empty = np.zeros((4, 4), np.int32)
    r = panoptic_quality(empty, empty, match_iou)
    assert np.isnan(r["dq"]) and np.isnan(r["sq"]) and np.isnan(r["pq"])
    assert (r["tp"], r["fp"], r["fn"]) == (0, 0, 0)


def test_pq_rejects_maps_of_different_shapes():
    with pytest.raises(ValueError, match="shape"):
        panoptic_quality(np.zeros((4, 4), np.int32), np.zeros((4, 5), np.int32))


def test_pq_rejects_float_maps():
    with pytest.raises(ValueError, match="integer"):
        panoptic_quality(np.zeros((4, 4)), np.zeros((4, 4), np.int32))


# ---------------------------------------------------------------- count level


def test_pq_from_counts_hand_values_per_class():
    dq, sq, pq = pq_from_counts([2, 0, 0], [1, 3, 0], [1, 0, 0], [1.5, 0.0, 0.0])
    # class 1: DQ 2 / 3, SQ 0.75; class 2: only false positives -> 0; class 3: nothing -> NaN
    assert dq[:2] == pytest.approx([2 / 3, 0.0]) and sq[:2] == pytest.approx([0.75, 0.0])
    assert pq[:2] == pytest.approx([0.5, 0.0])
    assert np.isnan(dq[2]) and np.isnan(sq[2]) and np.isnan(pq[2])


def test_class_match_counts_equal_panoptic_quality_of_each_class_restricted_map(consep_tiles):
    total = np.zeros((4, 7))
    for inst, cls in consep_tiles[:6]:
        pred_inst = np.roll(inst, 2, axis=1)
        pred_cls = np.roll(np.where(cls == 3, 4, cls), 2, axis=1)  # class 3 predicted as 4
        counts = class_match_counts(inst, cls, pred_inst, pred_cls, 7)
        for c in range(1, 8):
            r = panoptic_quality(restrict_to_class(inst, cls, c), restrict_to_class(pred_inst, pred_cls, c))
            assert list(counts[:, c - 1]) == pytest.approx([r["tp"], r["fp"], r["fn"], r["iou_sum"]])
        total += counts
    assert total[0, 2] == total[1, 2] == 0 and total[2, 2] > 0  # class 3 is never predicted: only misses


def test_class_match_counts_reject_class_maps_of_another_shape(row_map):
    inst = row_map((1, 0, 4), length=8)
    with pytest.raises(ValueError, match="shape"):
        class_match_counts(inst, np.zeros((1, 9), np.int32), inst, (inst > 0) * 1, 1)
