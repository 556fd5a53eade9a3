"""PQ, AJI and AJI+ against brute-force loops over every pair of masks (random and real maps)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.optimize import linear_sum_assignment

from embedstore.trainer.metrics import aggregated_jaccard_index, aggregated_jaccard_index_plus, panoptic_quality


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


def test_pq_and_aji_match_brute_force_on_real_cytodark0_predictions(real_data: Path):
    true = np.array(Image.open(real_data / "cytodark0" / "ID14_Aud_Cortex_Tursiops_14_masks.png"))
    pred = np.load(real_data / "cytodark0" / "predictions" / "masks_stardist_cyto_boss.npy")
    tp, fp, fn, iou_sum = brute_pq(true, pred, 0.5)
    r = panoptic_quality(true, pred)
    assert (r["tp"], r["fp"], r["fn"]) == (tp, fp, fn)
    assert r["iou_sum"] == pytest.approx(iou_sum)
    assert aggregated_jaccard_index(true, pred) == pytest.approx(brute_aji(true, pred, one_to_one=False))
    assert aggregated_jaccard_index_plus(true, pred) == pytest.approx(brute_aji(true, pred, one_to_one=True))
