"""`pannuke`: per-image binary and per-class PQ, its count-level form, and both set-level protocols."""

from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

from embedstore.trainer.metrics import (
    aggregate_pannuke,
    class_match_counts,
    pannuke_from_counts,
    pannuke_pq,
    panoptic_quality,
)
from embedstore.trainer.metrics.panoptic import restrict_to_class


@pytest.fixture
def two_class_image(row_map) -> tuple[np.ndarray, ...]:
    """GT: one class-1 cell. Prediction: that cell exactly, plus a spurious class-2 cell."""
    true_inst = row_map((4, 0, 4), length=10)
    true_cls = (true_inst > 0).astype(np.uint8)
    pred_inst = row_map((1, 0, 4), (2, 6, 9), length=10)
    pred_cls = row_map((1, 0, 4), (2, 6, 9), length=10).astype(np.uint8)
    return true_inst, true_cls, pred_inst, pred_cls


def test_pannuke_class_absent_from_truth_is_nan_even_when_predicted(two_class_image):
    r = pannuke_pq(*two_class_image, n_classes=2)
    assert r["pq"][0] == pytest.approx(1.0)
    assert np.isnan(r["pq"][1])
    assert r["mpq"] == pytest.approx(1.0)


def test_pannuke_binary_pq_counts_every_class(two_class_image):
    r = pannuke_pq(*two_class_image, n_classes=2)
    assert r["bdq"] == pytest.approx(1 / (1 + 0.5))
    assert r["bpq"] == pytest.approx(2 / 3)


def test_pannuke_empty_truth_gives_nan_everywhere(two_class_image):
    _, _, pred_inst, pred_cls = two_class_image
    empty = np.zeros_like(pred_inst)
    r = pannuke_pq(empty, empty, pred_inst, pred_cls, n_classes=2)
    assert np.isnan(r["bpq"]) and np.isnan(r["mpq"]) and np.isnan(r["pq"]).all()


def test_pannuke_wrong_class_scores_zero_for_both_classes(two_class_image, row_map):
    true_inst, true_cls, _, _ = two_class_image
    true_inst = true_inst + np.where(row_map((1, 6, 9), length=10) > 0, 8, 0)
    true_cls = np.where(true_inst == 8, 2, true_cls).astype(np.uint8)
    pred_cls = np.where(true_inst > 0, 3 - true_cls, 0).astype(np.uint8)  # classes swapped
    r = pannuke_pq(true_inst, true_cls, true_inst, pred_cls, n_classes=2)
    assert r["bpq"] == 1.0
    assert list(r["pq"]) == [0.0, 0.0]


def test_pannuke_real_labels_against_themselves_score_one_for_present_classes(real_data: Path):
    data = sio.loadmat(real_data / "pannuke_like_cellseg_models" / "masks" / "patch1.mat")
    inst, cls = data["inst_map"], data["type_map"]
    r = pannuke_pq(inst, cls, inst, cls, n_classes=5)
    present = np.isin(np.arange(1, 6), np.unique(data["inst_type"]))
    assert np.allclose(r["pq"][present], 1.0)
    assert np.isnan(r["pq"][~present]).all()


def test_pannuke_per_class_pq_equals_panoptic_quality_of_each_class_on_real_tiles(consep_tiles):
    for inst, cls in consep_tiles[:6]:
        pred_inst = np.roll(inst, (1, 3), axis=(0, 1))
        pred_cls = np.roll(np.where(cls == 2, 5, cls), (1, 3), axis=(0, 1))
        r = pannuke_pq(inst, cls, pred_inst, pred_cls, n_classes=7)
        for c in range(1, 8):
            t = restrict_to_class(inst, cls, c)
            expected = panoptic_quality(t, restrict_to_class(pred_inst, pred_cls, c))["pq"] if t.any() else np.nan
            assert r["pq"][c - 1] == pytest.approx(expected, nan_ok=True)
        assert r["bpq"] == panoptic_quality(inst, pred_inst)["pq"]


def test_pannuke_from_counts_reads_the_same_matching_as_pannuke_pq(two_class_image):
    true_inst, true_cls, pred_inst, pred_cls = two_class_image
    counts = class_match_counts(true_inst, true_cls, pred_inst, pred_cls, 2)
    r = pannuke_from_counts(panoptic_quality(true_inst, pred_inst), counts)
    assert list(counts[:, 1]) == [0, 1, 0, 0]  # class 2: one false positive, absent from the GT
    assert r["pq"][0] == 1.0 and np.isnan(r["pq"][1]) and r["bpq"] == pytest.approx(2 / 3)


def test_aggregate_pannuke_reports_image_and_tissue_protocols():
    def result(bpq, mpq):
        return {"bpq": bpq, "mpq": mpq, "mdq": mpq, "msq": 1.0, "pq": np.array([mpq]), "dq": np.array([mpq]),
                "sq": np.array([1.0])}

    results = [result(0.6, 0.5), result(0.8, np.nan), result(0.4, 0.3)]
    agg = aggregate_pannuke(results, ["a", "a", "b"])
    assert agg["image_mean"]["bpq"] == pytest.approx(0.6)
    assert agg["image_mean"]["mpq"] == pytest.approx(0.4)
    assert agg["image_mean"]["pq"] == pytest.approx([0.4])
    tissue = agg["tissue_mean"]
    assert tissue["per_tissue"]["a"] == {"bpq": pytest.approx(0.7), "mpq": pytest.approx(0.5), "n_images": 2}
    assert tissue["bpq"] == pytest.approx((0.7 + 0.4) / 2)
    assert tissue["bpq_std"] == pytest.approx(0.15)
    assert tissue["mpq"] == pytest.approx(0.4)
    assert tissue["mpq_std"] == pytest.approx(0.1)


def test_aggregate_pannuke_rejects_mismatched_tissue_list():
    with pytest.raises(ValueError, match="tissue"):
        aggregate_pannuke([], ["a"])
