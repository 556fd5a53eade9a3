"""Panoptic quality: the per-image matching and the one formula that turns match counts into DQ, SQ, PQ.

Every PQ-family number of the package (binary PQ, PanNuke per-class PQ, CoNIC PQ+, the pooled numbers of
`embed evaluate`) goes through `pq_from_counts`, so the formula and its empty cases exist once.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from embedstore.trainer.metrics.overlap import FloatArray, IntArray, check_label_pair, overlap_table

#: Rows of a (4, C) per-class count array: matched pairs, unmatched predictions, unmatched GT, summed IoU.
COUNT_ROWS = ("tp", "fp", "fn", "iou_sum")


def pq_from_counts(
    tp: npt.ArrayLike, fp: npt.ArrayLike, fn: npt.ArrayLike, iou_sum: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """DQ, SQ and PQ from match counts (scalars or same-shaped arrays, e.g. (C,) per class).

    DQ = TP / (TP + FP/2 + FN/2), SQ = iou_sum / TP, PQ = DQ * SQ. NaN where nothing exists
    (TP = FP = FN = 0); SQ = 0 where something exists but nothing matched.

    Returns
    -------
    dq, sq, pq : float64 arrays of the inputs' broadcast shape (0-d for scalars).
    """
    tp, fp, fn, iou_sum = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn, iou_sum))
    denom = tp + 0.5 * fp + 0.5 * fn
    with np.errstate(invalid="ignore", divide="ignore"):
        dq = np.where(denom > 0, tp / denom, np.nan)
        sq = np.where(tp > 0, iou_sum / tp, np.where(denom > 0, 0.0, np.nan))
    return dq, sq, dq * sq


def panoptic_quality(true: IntArray, pred: IntArray, match_iou: float = 0.5) -> dict[str, float | int]:
    """Panoptic quality of one image (Kirillov et al.; HoVer-Net `get_fast_pq` matching).

    A GT and a predicted instance match when IoU > `match_iou` (strict: IoU exactly 0.5 does
    not match). For `match_iou` >= 0.5 such matches are unique by construction; below 0.5 the
    pairs come from a Hungarian assignment maximising the summed IoU, then thresholded.

    Parameters
    ----------
    true, pred : (H, W) integer instance maps, 0 = background, arbitrary ids.
    match_iou : IoU threshold, >= 0.

    Returns
    -------
    dict with `dq` = TP / (TP + FP/2 + FN/2), `sq` = iou_sum / TP, `pq` = dq * sq (floats), the
    counts `tp`, `fp`, `fn` (ints) and `iou_sum` (summed IoU of matched pairs). Both maps empty:
    dq, sq, pq are NaN. No match but something present: dq = sq = pq = 0.
    """
    check_label_pair(true, pred)
    if match_iou < 0:
        raise ValueError(f"match_iou must be >= 0, got {match_iou}")
    ov = overlap_table(true, pred)
    iou = ov.iou
    if match_iou >= 0.5:
        rows, cols = np.nonzero(iou > match_iou)
    else:
        rows, cols = linear_sum_assignment(-iou)
        keep = iou[rows, cols] > match_iou
        rows, cols = rows[keep], cols[keep]
    tp = rows.size
    fp, fn = ov.pred_ids.size - tp, ov.true_ids.size - tp
    iou_sum = float(iou[rows, cols].sum())
    dq, sq, pq = pq_from_counts(tp, fp, fn, iou_sum)
    return {"dq": float(dq), "sq": float(sq), "pq": float(pq), "tp": tp, "fp": fp, "fn": fn, "iou_sum": iou_sum}


def restrict_to_class(inst: IntArray, cls: IntArray, c: int) -> IntArray:
    """Instance map restricted to the pixels of class c (CoNIC `inst * (cls == c)`), (H, W)."""
    return np.where(cls == c, inst, 0)


def class_match_counts(
    true_inst: IntArray,
    true_cls: IntArray,
    pred_inst: IntArray,
    pred_cls: IntArray,
    n_classes: int,
    match_iou: float = 0.5,
) -> FloatArray:
    """Per-class match counts of one image: both maps restricted to class c, matched as `panoptic_quality`.

    The one matching per class that PanNuke per-class PQ (`pannuke_from_counts`) and CoNIC PQ+
    (`mpq_plus_from_counts`, after summing over images) both read; a class absent from both maps
    is not matched and counts zero.

    Parameters
    ----------
    true_inst, pred_inst : (H, W) integer instance maps, 0 = background.
    true_cls, pred_cls : (H, W) integer class maps, classes 1..n_classes, 0 = background.
    n_classes : number of foreground classes.
    match_iou : IoU threshold passed to `panoptic_quality`.

    Returns
    -------
    (4, n_classes) float64 rows `COUNT_ROWS` (TP, FP, FN, IoU sum); column c-1 is class c.
    """
    check_label_pair(true_inst, pred_inst, ("true_inst", "pred_inst"))
    check_label_pair(true_cls, pred_cls, ("true_cls", "pred_cls"))
    check_label_pair(true_inst, true_cls, ("true_inst", "true_cls"))
    counts = np.zeros((len(COUNT_ROWS), n_classes))
    for c in range(1, n_classes + 1):
        t = restrict_to_class(true_inst, true_cls, c)
        p = restrict_to_class(pred_inst, pred_cls, c)
        if t.any() or p.any():
            r = panoptic_quality(t, p, match_iou)
            counts[:, c - 1] = [r[key] for key in COUNT_ROWS]
    return counts
