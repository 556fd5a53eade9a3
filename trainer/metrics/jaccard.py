"""Overlap scores of one image: AJI (one-to-many), AJI+ (one-to-one) and binary foreground Dice."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from embedstore.trainer.metrics.overlap import IntArray, Overlap, check_label_pair, overlap_table


def _aji(ov: Overlap, rows: npt.NDArray[np.intp], cols: npt.NDArray[np.intp]) -> float:
    """AJI from matched (row, col) pairs: unmatched GT and never-chosen predictions join the union."""
    inter = ov.inter[rows, cols].sum()
    union = ov.union[rows, cols].sum()
    unmatched_true = np.ones(ov.true_ids.size, bool)
    unmatched_true[rows] = False
    unused_pred = np.ones(ov.pred_ids.size, bool)
    unused_pred[cols] = False
    union += ov.true_area[unmatched_true].sum() + ov.pred_area[unused_pred].sum()
    return float(inter / union) if union > 0 else math.nan


def aggregated_jaccard_index(true: IntArray, pred: IntArray) -> float:
    """Aggregated Jaccard Index (Kumar et al. 2017; MoNuSeg / HoVer-Net `get_fast_aji`).

    Each GT instance takes the prediction of highest IoU (ties: lowest prediction id); a
    prediction may serve several GT instances, and its pixels then count in each union. GT
    instances that overlap nothing and predictions chosen by no GT add their areas to the union.

    Parameters
    ----------
    true, pred : (H, W) integer instance maps, 0 = background, arbitrary ids.

    Returns
    -------
    AJI in [0, 1]; NaN when both maps are empty, 0 when exactly one is.
    """
    check_label_pair(true, pred)
    ov = overlap_table(true, pred)
    iou = ov.iou
    if iou.size:
        rows = np.flatnonzero(iou.max(axis=1) > 0)
        cols = iou[rows].argmax(axis=1)
    else:
        rows = cols = np.zeros(0, np.intp)
    return _aji(ov, rows, cols)


def aggregated_jaccard_index_plus(true: IntArray, pred: IntArray) -> float:
    """AJI+ (Graham et al. 2019, HoVer-Net `get_fast_aji_plus`): AJI with one-to-one pairing.

    GT and predictions are paired by a Hungarian assignment maximising the summed IoU; pairs
    with zero overlap are dropped, so a prediction never counts in more than one union.

    Parameters
    ----------
    true, pred : (H, W) integer instance maps, 0 = background, arbitrary ids.

    Returns
    -------
    AJI+ in [0, 1]; NaN when both maps are empty, 0 when exactly one is.
    """
    check_label_pair(true, pred)
    ov = overlap_table(true, pred)
    iou = ov.iou
    rows, cols = linear_sum_assignment(-iou)
    keep = iou[rows, cols] > 0
    return _aji(ov, rows[keep], cols[keep])


def dice(true: IntArray, pred: IntArray) -> float:
    """Binary foreground Dice, 2|T ∩ P| / (|T| + |P|) with T = true > 0, P = pred > 0.

    Parameters
    ----------
    true, pred : (H, W) integer label maps; only foreground vs background matters.

    Returns
    -------
    Dice in [0, 1]; NaN when both maps are all background.
    """
    check_label_pair(true, pred)
    t, p = true > 0, pred > 0
    total = int(t.sum()) + int(p.sum())
    return 2.0 * int((t & p).sum()) / total if total else math.nan
