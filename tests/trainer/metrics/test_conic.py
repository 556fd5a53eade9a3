"""`conic`: mPQ+ pools per-class counts over the set; its count-level form gives the same numbers."""

import numpy as np
import pytest

from embedstore.trainer.metrics import class_match_counts, conic_mpq_plus, mpq_plus_from_counts, panoptic_quality


def test_conic_mpq_plus_pools_counts_instead_of_averaging_images(row_map):
    perfect = row_map((1, 0, 4), length=20)
    three = row_map((1, 0, 4), (2, 6, 10), (3, 12, 16), length=20)
    samples = [
        (perfect, (perfect > 0).astype(np.uint8), perfect, (perfect > 0).astype(np.uint8)),
        (three, (three > 0).astype(np.uint8), np.zeros_like(three), np.zeros_like(three, dtype=np.uint8)),
    ]
    r = conic_mpq_plus(samples, n_classes=1)
    per_image_mean = np.mean([panoptic_quality(t, p)["pq"] for t, _, p, _ in samples])
    assert per_image_mean == pytest.approx(0.5)
    # pooled: TP 1, FN 3 -> DQ 1 / (1 + 1.5)
    assert list(r["tp"]) == [1] and list(r["fn"]) == [3]
    assert r["pq_plus"][0] == pytest.approx(0.4)
    assert r["mpq_plus"] == pytest.approx(0.4)


def test_conic_class_absent_from_the_whole_set_is_nan_and_left_out_of_the_mean(row_map):
    inst = row_map((1, 0, 4), length=8)
    cls = (inst > 0).astype(np.uint8)
    r = conic_mpq_plus([(inst, cls, inst, cls)], n_classes=2)
    assert r["pq_plus"][0] == pytest.approx(1.0)
    assert np.isnan(r["pq_plus"][1])
    assert r["mpq_plus"] == pytest.approx(1.0)


def test_conic_class_only_predicted_scores_zero(row_map):
    inst = row_map((1, 0, 4), length=8)
    r = conic_mpq_plus([(inst, (inst > 0) * 1, inst, (inst > 0) * 2)], n_classes=2)
    assert list(r["pq_plus"]) == [0.0, 0.0]
    assert list(r["fp"]) == [0, 1] and list(r["fn"]) == [1, 0]


def test_mpq_plus_from_counts_hand_values():
    # class 1: TP 1, FN 3, IoU 1 -> PQ+ 0.4; class 2: TP 2, FP 2, IoU 1.5 -> DQ 2/3, SQ 0.75; class 3: nothing
    r = mpq_plus_from_counts([[1, 2, 0], [0, 2, 0], [3, 0, 0], [1.0, 1.5, 0.0]])
    assert r["pq_plus"][:2] == pytest.approx([0.4, 0.5])
    assert np.isnan(r["pq_plus"][2])
    assert r["mpq_plus"] == pytest.approx(0.45)
    assert list(r["fp"]) == [0, 2, 0] and r["tp"].dtype == np.int64


def test_conic_mpq_plus_equals_mpq_plus_of_summed_class_counts_on_real_tiles(consep_tiles):
    samples = []
    for inst, cls in consep_tiles:
        pred_inst = np.roll(inst, (2, -1), axis=(0, 1))
        samples.append((inst, cls, pred_inst, np.roll(np.where(cls == 4, 3, cls), (2, -1), axis=(0, 1))))
    counts = sum(class_match_counts(*s, 7) for s in samples)
    r = conic_mpq_plus(samples, 7)
    assert r["mpq_plus"] == pytest.approx(mpq_plus_from_counts(counts)["mpq_plus"])
    assert 0.0 < r["mpq_plus"] < 1.0
