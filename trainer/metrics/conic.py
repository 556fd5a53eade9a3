"""CoNIC mPQ+: per-class match counts summed over a set, turned into PQ+ only once at the end."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from embedstore.trainer.metrics.overlap import FloatArray, IntArray
from embedstore.trainer.metrics.panoptic import class_match_counts, pq_from_counts
from embedstore.trainer.metrics.reductions import nanmean


def mpq_plus_from_counts(counts: npt.ArrayLike) -> dict[str, float | FloatArray]:
    """CoNIC DQ+, SQ+, PQ+ per class and mPQ+ from pooled (4, C) TP, FP, FN, IoU-sum counts.

    `counts` is the sum over images of `class_match_counts`; a class with no GT and no prediction
    in the whole set is NaN and left out of `mpq_plus`.

    Returns
    -------
    The `conic_mpq_plus` dict.
    """
    counts = np.asarray(counts, dtype=np.float64)
    dq, sq, pq = pq_from_counts(*counts)
    return {
        "mpq_plus": nanmean(pq),
        "pq_plus": pq,
        "dq_plus": dq,
        "sq_plus": sq,
        "tp": counts[0].astype(np.int64),
        "fp": counts[1].astype(np.int64),
        "fn": counts[2].astype(np.int64),
        "iou_sum": counts[3],
    }


def conic_mpq_plus(
    samples: Sequence[tuple[IntArray, IntArray, IntArray, IntArray]], n_classes: int, match_iou: float = 0.5
) -> dict[str, float | FloatArray]:
    """CoNIC multi-class PQ+ (TissueImageAnalytics/CoNIC `compute_stats.py`).

    Per image and class c, both instance maps are restricted to pixels of class c and matched as
    in `panoptic_quality`; TP, FP, FN and the IoU sum are summed over all images per class, and
    only then turned into DQ+, SQ+ and PQ+ (not an average of per-image PQ).

    Parameters
    ----------
    samples : (true_inst, true_cls, pred_inst, pred_cls) per image, each (H, W) integer.
    n_classes : number of foreground classes (class ids 1..n_classes).
    match_iou : IoU threshold.

    Returns
    -------
    dict with (n_classes,) arrays `pq_plus`, `dq_plus`, `sq_plus` (NaN for a class absent from
    both GT and predictions of the whole set), `tp`, `fp`, `fn`, `iou_sum`, and `mpq_plus`, the
    mean of `pq_plus` over the classes that are not NaN.
    """
    counts = np.zeros((4, n_classes))
    for sample in samples:
        counts += class_match_counts(*sample, n_classes, match_iou)
    return mpq_plus_from_counts(counts)
