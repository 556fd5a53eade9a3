"""Specification of embedstore.trainer.metrics.instance_metrics: hand-counted cases, edge cases and a brute-force cross-check."""

from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from PIL import Image
from scipy.optimize import linear_sum_assignment

from embedstore.trainer.metrics.instance_metrics import (
    aggregate_pannuke,
    aggregated_jaccard_index,
    aggregated_jaccard_index_plus,
    conic_mpq_plus,
    count_r2,
    detection_f1,
    detection_radius,
    dice,
    instance_centroids,
    instance_classes,
    instance_counts,
    match_centroids,
    panoptic_quality,
    pannuke_pq,
)

REAL = Path(__file__).resolve().parents[4] / "shared" / "data" / "real"


def row_map(*segments: tuple[int, int, int], length: int) -> np.ndarray:
    """A (1, length) instance map with `label` on columns [start, stop) for each (label, start, stop)."""
    m = np.zeros((1, length), np.int32)
    for label, start, stop in segments:
        m[0, start:stop] = label
    return m


def dots(shape: tuple[int, int], *points: tuple[int, int, int]) -> np.ndarray:
    """A map with one-pixel instances: value at (row, col) for each (row, col, value)."""
    m = np.zeros(shape, np.int32)
    for r, c, v in points:
        m[r, c] = v
    return m


# ---------------------------------------------------------------- brute-force references


def brute_iou(true: np.ndarray, pred: np.ndarray) -> tuple[list, list, np.ndarray]:
    """IoU of every (GT, pred) pair by looping over masks."""
    t_ids = [i for i in np.unique(true) if i != 0]
    p_ids = [i for i in np.unique(pred) if i != 0]
    iou = np.zeros((len(t_ids), len(p_ids)))
    for a, ti in enumerate(t_ids):
        for b, pj in enumerate(p_ids):
            tm, pm = true == ti, pred == pj
            iou[a, b] = (tm & pm).sum() / (tm | pm).sum()
    return t_ids, p_ids, iou


def brute_pq(true: np.ndarray, pred: np.ndarray, match_iou: float) -> tuple[int, int, int, float]:
    t_ids, p_ids, iou = brute_iou(true, pred)
    if match_iou >= 0.5:
        pairs = [(a, b) for a in range(len(t_ids)) for b in range(len(p_ids)) if iou[a, b] > match_iou]
    else:
        rows, cols = linear_sum_assignment(-iou)
        pairs = [(a, b) for a, b in zip(rows, cols) if iou[a, b] > match_iou]
    tp = len(pairs)
    return tp, len(p_ids) - tp, len(t_ids) - tp, sum(iou[a, b] for a, b in pairs)


def brute_aji(true: np.ndarray, pred: np.ndarray, one_to_one: bool) -> float:
    t_ids, p_ids, iou = brute_iou(true, pred)
    if one_to_one:
        rows, cols = linear_sum_assignment(-iou) if iou.size else ([], [])
        pairs = [(a, b) for a, b in zip(rows, cols) if iou[a, b] > 0]
    else:
        pairs = []
        for a in range(len(t_ids)):
            if len(p_ids) and iou[a].max() > 0:
                pairs.append((a, int(np.argmax(iou[a]))))
    inter = union = 0
    for a, b in pairs:
        tm, pm = true == t_ids[a], pred == p_ids[b]
        inter += (tm & pm).sum()
        union += (tm | pm).sum()
    used_t = {a for a, _ in pairs}
    used_p = {b for _, b in pairs}
    union += sum((true == t).sum() for a, t in enumerate(t_ids) if a not in used_t)
    union += sum((pred == p).sum() for b, p in enumerate(p_ids) if b not in used_p)
    return inter / union


def random_label_map(rng: np.random.Generator, ids: np.ndarray) -> np.ndarray:
    """A 24x24 map of blocky instances drawn from `ids` (0 included for background), upsampled 3x."""
    coarse = rng.choice(ids, size=(8, 8))
    return np.kron(coarse, np.ones((3, 3), np.int64))


# ---------------------------------------------------------------- panoptic quality


def test_pq_counts_one_match_one_miss_one_false_positive_with_non_contiguous_ids():
    true = row_map((7, 0, 8), (3, 12, 16), length=24)
    pred = row_map((1000, 0, 6), (5, 20, 24), length=24)
    r = panoptic_quality(true, pred)
    # id 7 vs 1000: inter 6, union 8 -> IoU 0.75; id 3 missed; id 5 spurious
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 1)
    assert r["iou_sum"] == pytest.approx(0.75)
    assert r["dq"] == pytest.approx(1 / (1 + 0.5 + 0.5))
    assert r["sq"] == pytest.approx(0.75)
    assert r["pq"] == pytest.approx(0.5 * 0.75)


def test_pq_pair_at_exactly_half_iou_is_not_a_match():
    true = row_map((1, 0, 100), length=100)
    pred = row_map((2, 0, 50), length=100)  # 50 / 100 = 0.5 exactly
    r = panoptic_quality(true, pred)
    assert (r["tp"], r["fp"], r["fn"]) == (0, 1, 1)
    assert r["pq"] == 0.0


def test_pq_pair_just_above_half_iou_is_a_match():
    true = row_map((1, 0, 100), length=100)
    pred = row_map((2, 0, 51), length=100)  # 51 / 100
    r = panoptic_quality(true, pred)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 0, 0)
    assert r["pq"] == pytest.approx(0.51)


def test_pq_below_half_threshold_uses_the_maximum_iou_assignment_not_greedy():
    # A=[0,10) B=[10,14); P=[4,14) Q=[0,4): IoU(A,P)=6/14, IoU(B,P)=4/10, IoU(A,Q)=4/10.
    # Greedy takes A-P (0.43) and stops; the assignment takes A-Q + B-P (0.8 in total).
    true = row_map((1, 0, 10), (2, 10, 14), length=14)
    pred = row_map((8, 4, 14), (9, 0, 4), length=14)
    r = panoptic_quality(true, pred, match_iou=0.3)
    assert (r["tp"], r["fp"], r["fn"]) == (2, 0, 0)
    assert r["iou_sum"] == pytest.approx(0.8)
    assert r["pq"] == pytest.approx(0.4)


def test_pq_default_threshold_rejects_the_same_low_iou_pairs():
    true = row_map((1, 0, 10), (2, 10, 14), length=14)
    pred = row_map((8, 4, 14), (9, 0, 4), length=14)
    assert panoptic_quality(true, pred)["tp"] == 0


def test_pq_of_one_pixel_instances():
    true = dots((4, 4), (0, 0, 1000), (3, 3, 4))
    pred = dots((4, 4), (0, 0, 2), (3, 2, 9))
    r = panoptic_quality(true, pred)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 1)
    assert r["sq"] == 1.0


def test_pq_touching_instances_are_scored_separately():
    # two touching 2x4 GT cells; prediction moves their border by one column
    true = np.repeat(row_map((7, 0, 4), (3, 4, 8), length=8), 2, axis=0)
    pred = np.repeat(row_map((1, 0, 5), (2, 5, 8), length=8), 2, axis=0)
    r = panoptic_quality(true, pred)
    assert r["tp"] == 2
    assert r["sq"] == pytest.approx((8 / 10 + 6 / 8) / 2)


def test_pq_merged_prediction_of_two_touching_cells_matches_neither():
    true = np.repeat(row_map((7, 0, 4), (3, 4, 8), length=8), 2, axis=0)
    pred = np.repeat(row_map((1, 0, 8), length=8), 2, axis=0)  # IoU 0.5 with each
    r = panoptic_quality(true, pred)
    assert (r["tp"], r["fp"], r["fn"]) == (0, 1, 2)


def test_pq_with_empty_truth_is_zero_and_counts_false_positives():
    pred = dots((4, 4), (1, 1, 5), (2, 3, 6))
    r = panoptic_quality(np.zeros((4, 4), np.int32), pred)
    assert (r["tp"], r["fp"], r["fn"], r["dq"], r["sq"], r["pq"]) == (0, 2, 0, 0.0, 0.0, 0.0)


def test_pq_with_empty_prediction_is_zero_and_counts_misses():
    true = dots((4, 4), (1, 1, 5))
    r = panoptic_quality(true, np.zeros((4, 4), np.int32))
    assert (r["tp"], r["fp"], r["fn"], r["pq"]) == (0, 0, 1, 0.0)


@pytest.mark.parametrize("match_iou", [0.5, 0.3])
def test_pq_with_both_maps_empty_is_nan(match_iou):
    empty = np.zeros((4, 4), np.int32)
    r = panoptic_quality(empty, empty, match_iou)
    assert np.isnan(r["dq"]) and np.isnan(r["sq"]) and np.isnan(r["pq"])
    assert (r["tp"], r["fp"], r["fn"]) == (0, 0, 0)


def test_pq_is_invariant_to_relabelling_with_huge_ids():
    rng = np.random.default_rng(3)
    true = random_label_map(rng, np.arange(8))
    pred = random_label_map(rng, np.arange(8))
    relabelled = np.where(true > 0, true * 10**9 + 17, 0)  # takes the np.unique path
    assert panoptic_quality(relabelled, pred) == panoptic_quality(true, pred)


@pytest.mark.parametrize("seed", range(12))
def test_pq_and_aji_match_a_brute_force_loop_over_mask_pairs(seed):
    rng = np.random.default_rng(seed)
    high = 10**6 if seed % 2 else 40  # odd seeds take the np.unique path, even ones the lookup table
    ids = np.concatenate([[0, 0], rng.choice(high, size=6, replace=False) + 1])
    true, pred = random_label_map(rng, ids), random_label_map(rng, ids[::-1])
    for match_iou in (0.5, 0.3, 0.0):
        tp, fp, fn, iou_sum = brute_pq(true, pred, match_iou)
        r = panoptic_quality(true, pred, match_iou)
        assert (r["tp"], r["fp"], r["fn"]) == (tp, fp, fn)
        assert r["iou_sum"] == pytest.approx(iou_sum)
    assert aggregated_jaccard_index(true, pred) == pytest.approx(brute_aji(true, pred, one_to_one=False))
    assert aggregated_jaccard_index_plus(true, pred) == pytest.approx(brute_aji(true, pred, one_to_one=True))


def test_pq_and_aji_match_brute_force_on_real_cytodark0_predictions():
    true = np.array(Image.open(REAL / "cytodark0" / "ID14_Aud_Cortex_Tursiops_14_masks.png"))
    pred = np.load(REAL / "cytodark0" / "predictions" / "masks_stardist_cyto_boss.npy")
    tp, fp, fn, iou_sum = brute_pq(true, pred, 0.5)
    r = panoptic_quality(true, pred)
    assert (r["tp"], r["fp"], r["fn"]) == (tp, fp, fn)
    assert r["iou_sum"] == pytest.approx(iou_sum)
    assert aggregated_jaccard_index(true, pred) == pytest.approx(brute_aji(true, pred, one_to_one=False))
    assert aggregated_jaccard_index_plus(true, pred) == pytest.approx(brute_aji(true, pred, one_to_one=True))


def test_pq_rejects_maps_of_different_shapes():
    with pytest.raises(ValueError, match="shape"):
        panoptic_quality(np.zeros((4, 4), np.int32), np.zeros((4, 5), np.int32))


def test_pq_rejects_float_maps():
    with pytest.raises(ValueError, match="integer"):
        panoptic_quality(np.zeros((4, 4)), np.zeros((4, 4), np.int32))


# ---------------------------------------------------------------- AJI, AJI+, Dice


def test_aji_lets_one_prediction_serve_two_truths_and_aji_plus_does_not():
    true = np.repeat(row_map((7, 0, 4), (3, 4, 8), length=8), 2, axis=0)
    pred = np.repeat(row_map((1, 0, 8), length=8), 2, axis=0)
    # AJI: both GT take the merged cell: (4 + 4) / (8 + 8)
    assert aggregated_jaccard_index(true, pred) == pytest.approx(8 / 16)
    # AJI+: one GT paired (4 / 8), the other's 4 pixels join the union
    assert aggregated_jaccard_index_plus(true, pred) == pytest.approx(4 / 12)


def test_aji_adds_unused_predictions_to_the_union():
    true = dots((4, 4), (0, 0, 5))
    true[0, 1] = 5
    pred = np.where(true > 0, 9, 0)
    pred[3, 3] = 4  # a one-pixel false positive
    assert aggregated_jaccard_index(true, pred) == pytest.approx(2 / 3)
    assert aggregated_jaccard_index_plus(true, pred) == pytest.approx(2 / 3)


def test_aji_on_shifted_touching_instances():
    true = np.repeat(row_map((7, 0, 4), (3, 4, 8), length=8), 2, axis=0)
    pred = np.repeat(row_map((1, 0, 5), (2, 5, 8), length=8), 2, axis=0)
    assert aggregated_jaccard_index(true, pred) == pytest.approx((8 + 6) / (10 + 8))


def test_aji_empty_cases():
    empty = np.zeros((3, 3), np.int32)
    some = dots((3, 3), (1, 1, 4))
    assert np.isnan(aggregated_jaccard_index(empty, empty))
    assert np.isnan(aggregated_jaccard_index_plus(empty, empty))
    assert aggregated_jaccard_index(some, empty) == 0.0
    assert aggregated_jaccard_index_plus(empty, some) == 0.0


def test_dice_counts_foreground_only():
    true = row_map((1, 0, 2), (2, 2, 4), length=8)
    pred = row_map((5, 2, 6), length=8)  # overlaps 2 of 4 foreground pixels
    assert dice(true, pred) == pytest.approx(2 * 2 / (4 + 4))


def test_dice_empty_cases():
    empty = np.zeros((3, 3), np.int32)
    assert np.isnan(dice(empty, empty))
    assert dice(empty, dots((3, 3), (0, 0, 1))) == 0.0


# ---------------------------------------------------------------- PanNuke


def two_class_image() -> tuple[np.ndarray, ...]:
    """GT: one class-1 cell. Prediction: that cell exactly, plus a spurious class-2 cell."""
    true_inst = row_map((4, 0, 4), length=10)
    true_cls = (true_inst > 0).astype(np.uint8)
    pred_inst = row_map((1, 0, 4), (2, 6, 9), length=10)
    pred_cls = row_map((1, 0, 4), (2, 6, 9), length=10).astype(np.uint8)
    return true_inst, true_cls, pred_inst, pred_cls


def test_pannuke_class_absent_from_truth_is_nan_even_when_predicted():
    r = pannuke_pq(*two_class_image(), n_classes=2)
    assert r["pq"][0] == pytest.approx(1.0)
    assert np.isnan(r["pq"][1])
    assert r["mpq"] == pytest.approx(1.0)


def test_pannuke_binary_pq_counts_every_class():
    r = pannuke_pq(*two_class_image(), n_classes=2)
    assert r["bdq"] == pytest.approx(1 / (1 + 0.5))
    assert r["bpq"] == pytest.approx(2 / 3)


def test_pannuke_empty_truth_gives_nan_everywhere():
    _, _, pred_inst, pred_cls = two_class_image()
    empty = np.zeros_like(pred_inst)
    r = pannuke_pq(empty, empty, pred_inst, pred_cls, n_classes=2)
    assert np.isnan(r["bpq"]) and np.isnan(r["mpq"]) and np.isnan(r["pq"]).all()


def test_pannuke_wrong_class_scores_zero_for_both_classes():
    true_inst, true_cls, _, _ = two_class_image()
    true_inst = true_inst + np.where(row_map((1, 6, 9), length=10) > 0, 8, 0)
    true_cls = np.where(true_inst == 8, 2, true_cls).astype(np.uint8)
    pred_cls = np.where(true_inst > 0, 3 - true_cls, 0).astype(np.uint8)  # classes swapped
    r = pannuke_pq(true_inst, true_cls, true_inst, pred_cls, n_classes=2)
    assert r["bpq"] == 1.0
    assert list(r["pq"]) == [0.0, 0.0]


def test_pannuke_real_labels_against_themselves_score_one_for_present_classes():
    data = sio.loadmat(REAL / "pannuke_like_cellseg_models" / "masks" / "patch1.mat")
    inst, cls = data["inst_map"], data["type_map"]
    r = pannuke_pq(inst, cls, inst, cls, n_classes=5)
    present = np.isin(np.arange(1, 6), np.unique(data["inst_type"]))
    assert np.allclose(r["pq"][present], 1.0)
    assert np.isnan(r["pq"][~present]).all()


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


# ---------------------------------------------------------------- CoNIC


def test_conic_mpq_plus_pools_counts_instead_of_averaging_images():
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


def test_conic_class_absent_from_the_whole_set_is_nan_and_left_out_of_the_mean():
    inst = row_map((1, 0, 4), length=8)
    cls = (inst > 0).astype(np.uint8)
    r = conic_mpq_plus([(inst, cls, inst, cls)], n_classes=2)
    assert r["pq_plus"][0] == pytest.approx(1.0)
    assert np.isnan(r["pq_plus"][1])
    assert r["mpq_plus"] == pytest.approx(1.0)


def test_conic_class_only_predicted_scores_zero():
    inst = row_map((1, 0, 4), length=8)
    r = conic_mpq_plus([(inst, (inst > 0) * 1, inst, (inst > 0) * 2)], n_classes=2)
    assert list(r["pq_plus"]) == [0.0, 0.0]
    assert list(r["fp"]) == [0, 1] and list(r["fn"]) == [1, 0]


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


def test_instance_counts_use_the_majority_class_of_each_instance():
    inst = row_map((5, 0, 3), (9, 3, 6), length=6)
    cls = np.array([[2, 2, 1, 1, 0, 0]], np.uint8)  # 5 -> 2 (2 of 3), 9 -> 1 (class beats background)
    assert list(instance_classes(inst, cls)[1]) == [2, 1]
    assert list(instance_counts(inst, cls, n_classes=3)) == [1, 1, 0]


# ---------------------------------------------------------------- detection


def test_detection_radius_is_three_microns():
    assert detection_radius(0.25) == pytest.approx(12.0)
    assert detection_radius(0.5) == pytest.approx(6.0)


def test_instance_centroids_match_the_real_labels_stored_centroids():
    data = sio.loadmat(REAL / "pannuke_like_cellseg_models" / "masks" / "patch2.mat")
    ids, centroids = instance_centroids(data["inst_map"])
    assert len(ids) == 47
    assert np.allclose(centroids[:, ::-1], data["inst_centroid"])  # stored as (x, y)


def test_instance_classes_match_the_real_labels_stored_types():
    data = sio.loadmat(REAL / "pannuke_like_cellseg_models" / "masks" / "patch3.mat")
    _, classes = instance_classes(data["inst_map"], data["type_map"])
    assert np.array_equal(classes, data["inst_type"].ravel())


def test_pair_at_exactly_the_radius_is_kept():
    true, pred = dots((20, 20), (5, 5, 1)), dots((20, 20), (5, 17, 3))  # 12 px apart
    assert detection_f1([(true, None, pred, None)], radius=12)["tp"] == 1


def test_pair_beyond_the_radius_is_dropped():
    true, pred = dots((20, 20), (5, 5, 1)), dots((20, 20), (5, 17, 3))
    r = detection_f1([(true, None, pred, None)], radius=11.99)
    assert (r["tp"], r["fp"], r["fn"]) == (0, 1, 1)


def test_match_centroids_minimises_total_distance():
    # GT a=(0,0), b=(0,4); pred p=(0,3), q=(0,7). Greedy pairs b-p (1), leaving a-q 7 apart;
    # the assignment pairs a-p (3) and b-q (3).
    pairs, lone_t, lone_p = match_centroids(np.array([[0, 0], [0, 4]]), np.array([[0, 3], [0, 7]]), radius=5)
    assert pairs.tolist() == [[0, 0], [1, 1]]
    assert lone_t.size == 0 and lone_p.size == 0


def per_class_case() -> list:
    shape = (40, 40)
    img1 = (
        dots(shape, (2, 2, 1), (2, 20, 2), (20, 2, 3)),
        dots(shape, (2, 2, 1), (2, 20, 1), (20, 2, 2)),
        dots(shape, (2, 3, 7), (2, 21, 8), (30, 30, 9)),
        dots(shape, (2, 3, 1), (2, 21, 2), (30, 30, 1)),
    )
    img2 = (
        dots(shape, (5, 5, 1)),
        dots(shape, (5, 5, 2)),
        dots(shape, (5, 6, 4), (38, 38, 5)),
        dots(shape, (5, 6, 2), (38, 38, 2)),
    )
    return [img1, img2]


def test_detection_f1_pools_pairs_over_images():
    r = detection_f1(per_class_case(), radius=12, n_classes=2)
    assert (r["tp"], r["fp"], r["fn"]) == (3, 2, 1)
    assert r["precision"] == pytest.approx(3 / 5)
    assert r["recall"] == pytest.approx(3 / 4)
    assert r["f1"] == pytest.approx(6 / 9)
    assert r["type_accuracy"] == pytest.approx(2 / 3)


def test_per_class_f1_uses_hovernet_weights():
    r = detection_f1(per_class_case(), radius=12, n_classes=2)
    # class 1: TP 1, FP 0, FN 1 (GT 1 predicted 2), FP_d 1, FN_d 0
    # class 2: TP 1, FP 1, FN 0, FP_d 1, FN_d 1
    assert r["f1_per_class"] == pytest.approx([2 / (2 + 2 + 1), 2 / (2 + 2 + 1 + 1)])
    assert r["precision_per_class"] == pytest.approx([1 / (1 + 1), 1 / (1 + 2 + 1)])
    assert r["recall_per_class"] == pytest.approx([1 / (1 + 2), 1 / (1 + 1)])


def test_detection_f1_of_empty_images_is_nan_not_a_dummy_match():
    empty = np.zeros((8, 8), np.int32)
    r = detection_f1([(empty, empty, empty, empty)], radius=12, n_classes=1)
    assert (r["tp"], r["fp"], r["fn"]) == (0, 0, 0)
    assert np.isnan(r["f1"]) and np.isnan(r["f1_per_class"][0])


def test_detection_f1_needs_class_maps_for_per_class_scores():
    m = dots((8, 8), (1, 1, 1))
    with pytest.raises(ValueError, match="class maps"):
        detection_f1([(m, None, m, None)], radius=12, n_classes=1)
