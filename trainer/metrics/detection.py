"""Detection: instance centroids, their Hungarian pairing within a radius, and pooled (per-class) F1.

`instance_centroids` is hand-written because it is faster than the library calls it replaces: on 64
real 256 px CoNSeP tiles (about 40 cells each), three bincounts over dense ids take 0.90 ms per
tile, `skimage.measure.regionprops_table(..., properties=("label", "centroid"))` 1.36 ms (1.5x
slower) and `scipy.ndimage.center_of_mass(..., labels, index)` 1.87 ms (2.1x slower); docs/metrics.md
("Pairwise overlaps") gives the timing script. Its test checks it against `center_of_mass`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from embedstore.trainer.metrics.counts import instance_classes
from embedstore.trainer.metrics.overlap import FloatArray, IntArray, check_label_map, check_label_pair, dense_ids
from embedstore.trainer.metrics.reductions import ratio

#: (true_inst, true_cls, pred_inst, pred_cls) maps of one image, each (H, W).
LabelledPair = tuple[IntArray, IntArray | None, IntArray, IntArray | None]


def detection_radius(um_per_px: float) -> float:
    """Centroid pairing radius in pixels: 3 µm, i.e. 12 px at 0.25 µm/px (40x), 6 px at 0.5 µm/px (20x)."""
    if um_per_px <= 0:
        raise ValueError(f"um_per_px must be > 0, got {um_per_px}")
    return 3.0 / um_per_px


def instance_centroids(inst: IntArray) -> tuple[IntArray, FloatArray]:
    """Centroid (mean pixel row, column) of every instance, as skimage regionprops' `centroid`.

    Returns
    -------
    ids (N,) sorted instance ids and centroids (N, 2) float64 in (row, col) pixels.
    """
    check_label_map(inst, "inst")
    ids, index = dense_ids(inst)
    flat = index.ravel()
    rows, cols = np.indices(inst.shape)
    n = ids.size + 1
    area = np.bincount(flat, minlength=n)[1:]
    sums = [np.bincount(flat, weights=coord.ravel(), minlength=n)[1:] for coord in (rows, cols)]
    return ids, np.stack(sums, axis=1) / np.maximum(area, 1)[:, None]


def match_centroids(
    true_xy: FloatArray, pred_xy: FloatArray, radius: float
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Pair points as HoVer-Net `pair_coordinates`: Hungarian on Euclidean distance, keep <= radius.

    The assignment minimises the summed distance over all points, then pairs farther than
    `radius` are dropped (distance exactly `radius` is kept).

    Parameters
    ----------
    true_xy : (T, 2) and pred_xy : (P, 2) float coordinates in pixels.
    radius : largest pairing distance in pixels, inclusive.

    Returns
    -------
    pairs (K, 2) indices (true, pred), unpaired_true (T-K,) and unpaired_pred (P-K,) indices.
    """
    true_xy = np.asarray(true_xy, dtype=np.float64).reshape(-1, 2)
    pred_xy = np.asarray(pred_xy, dtype=np.float64).reshape(-1, 2)
    distance = cdist(true_xy, pred_xy)
    rows, cols = linear_sum_assignment(distance)
    keep = distance[rows, cols] <= radius
    rows, cols = rows[keep], cols[keep]
    return (
        np.stack([rows, cols], axis=1),
        np.setdiff1d(np.arange(len(true_xy)), rows),
        np.setdiff1d(np.arange(len(pred_xy)), cols),
    )


class MatchedClasses(NamedTuple):
    """One image's instances after centroid pairing, as class ids (all 0 without classes).

    Concatenating each field over images and passing them to `detection_from_classes` gives the
    pooled set-level detection numbers.
    """

    paired_true: npt.NDArray[np.int64]  # (K,) class of each paired GT instance
    paired_pred: npt.NDArray[np.int64]  # (K,) class of its paired prediction
    unpaired_true: npt.NDArray[np.int64]  # (T-K,) classes of GT instances left unpaired
    unpaired_pred: npt.NDArray[np.int64]  # (P-K,) classes of predictions left unpaired


def match_instances(
    true_inst: IntArray,
    true_cls: IntArray | None,
    pred_inst: IntArray,
    pred_cls: IntArray | None,
    radius: float,
    n_classes: int = 0,
) -> MatchedClasses:
    """Reduce one image's instances to centroids (and majority classes) and pair them by `match_centroids`.

    Parameters
    ----------
    true_inst, pred_inst : (H, W) integer instance maps, 0 = background.
    true_cls, pred_cls : (H, W) integer class maps; read only when n_classes > 0 (may be None otherwise).
    radius : pairing radius in pixels, inclusive.
    n_classes : number of classes; 0 gives class 0 to every instance.
    """
    check_label_pair(true_inst, pred_inst, ("true_inst", "pred_inst"))
    _, t_xy = instance_centroids(true_inst)
    _, p_xy = instance_centroids(pred_inst)
    pairs, unpaired_t, unpaired_p = match_centroids(t_xy, p_xy, radius)
    if n_classes > 0:
        if true_cls is None or pred_cls is None:
            raise ValueError("detection by class needs class maps for every image when n_classes > 0")
        _, t_cls = instance_classes(true_inst, true_cls)
        _, p_cls = instance_classes(pred_inst, pred_cls)
    else:
        t_cls, p_cls = np.zeros(len(t_xy), np.int64), np.zeros(len(p_xy), np.int64)
    return MatchedClasses(t_cls[pairs[:, 0]], p_cls[pairs[:, 1]], t_cls[unpaired_t], p_cls[unpaired_p])


def pool_matches(matched: Sequence[MatchedClasses]) -> MatchedClasses:
    """Concatenate each field of per-image `MatchedClasses` over a set (empty arrays for no image)."""
    if not matched:
        return MatchedClasses(*(np.zeros(0, np.int64) for _ in MatchedClasses._fields))
    return MatchedClasses(*(np.concatenate(field) for field in zip(*matched)))


def detection_from_classes(
    paired_true: npt.ArrayLike,
    paired_pred: npt.ArrayLike,
    unpaired_true: npt.ArrayLike,
    unpaired_pred: npt.ArrayLike,
    n_classes: int = 0,
) -> dict[str, int | float | FloatArray]:
    """Detection P/R/F1 and HoVer-Net per-class F1 from pooled `MatchedClasses` fields.

    Detection: P = TP/(TP+FP), R = TP/(TP+FN), F1 = 2TP/(2TP+FP+FN) with TP = paired, FP =
    unpaired predictions, FN = unpaired GT. Per class c, over the pairs with GT or prediction of
    class c (so TN_c = 0 by construction in the reference):
    F1_c = 2TP_c / (2TP_c + 2FP_c + 2FN_c + FP_d,c + FN_d,c),
    P_c = TP_c / (TP_c + 2FP_c + FP_d,c), R_c = TP_c / (TP_c + 2FN_c + FN_d,c), where FP_c / FN_c
    are pairs whose prediction / GT only is c and FP_d,c / FN_d,c unpaired predictions / GT of
    class c. Any ratio with a zero denominator is NaN.

    Parameters
    ----------
    paired_true, paired_pred : (K,) int class ids of the paired GT and predictions, pooled over images.
    unpaired_true, unpaired_pred : (FN,) and (FP,) int class ids of the unpaired GT and predictions.
    n_classes : number of classes (ids 1..n_classes) to score; 0 for detection only.

    Returns
    -------
    The `detection_f1` dict.
    """
    pt, pp, ut, up = (np.asarray(v, dtype=np.int64) for v in (paired_true, paired_pred, unpaired_true, unpaired_pred))
    tp, fp, fn = pt.size, up.size, ut.size
    out: dict[str, int | float | FloatArray] = {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
    }
    if n_classes > 0:
        out["type_accuracy"] = ratio(int((pt == pp).sum()), tp)
        scores = np.full((3, n_classes), np.nan)
        for c in range(1, n_classes + 1):
            tp_c = int(((pt == c) & (pp == c)).sum())
            fp_c = int(((pt != c) & (pp == c)).sum())
            fn_c = int(((pt == c) & (pp != c)).sum())
            fp_d, fn_d = int((up == c).sum()), int((ut == c).sum())
            scores[:, c - 1] = (
                ratio(2 * tp_c, 2 * tp_c + 2 * fp_c + 2 * fn_c + fp_d + fn_d),
                ratio(tp_c, tp_c + 2 * fp_c + fp_d),
                ratio(tp_c, tp_c + 2 * fn_c + fn_d),
            )
        out["f1_per_class"], out["precision_per_class"], out["recall_per_class"] = scores
    return out


def detection_f1(
    samples: Sequence[LabelledPair], radius: float, n_classes: int = 0
) -> dict[str, int | float | FloatArray]:
    """Detection F1 and HoVer-Net per-class F1, with pairs pooled over the whole set.

    Instances are reduced to centroids (`instance_centroids`) and classes (`instance_classes`),
    paired per image by `match_centroids` (`match_instances`), and every count is summed over
    images before `detection_from_classes` applies the formulas.

    Parameters
    ----------
    samples : (true_inst, true_cls, pred_inst, pred_cls) per image, (H, W) integer maps; the
        class maps are only read when n_classes > 0 and may be None otherwise.
    radius : pairing radius in pixels (see `detection_radius`), inclusive.
    n_classes : number of classes (ids 1..n_classes) to score; 0 for detection only.

    Returns
    -------
    dict with `tp`, `fp`, `fn` (ints), `precision`, `recall`, `f1`; when n_classes > 0 also
    `type_accuracy` (share of pairs whose classes agree) and (n_classes,) arrays
    `f1_per_class`, `precision_per_class`, `recall_per_class` (entry c-1 for class c).
    """
    matched = pool_matches([match_instances(*sample, radius, n_classes) for sample in samples])
    return detection_from_classes(*matched, n_classes)
