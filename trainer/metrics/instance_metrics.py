"""Instance segmentation, detection and counting metrics with the published protocols.

Pure numpy/scipy, importing nothing else from the package, so a user can score any pair of
integer instance maps (0 = background, any non-negative ids, not necessarily 1..N) without
torch. Every definition, its empty-case handling and where it departs from the reference code
is written down in docs/metrics.md.

Per image: `panoptic_quality`, `aggregated_jaccard_index`, `aggregated_jaccard_index_plus`,
`dice`, `pannuke_pq`. Over a set: `aggregate_pannuke` (PanNuke bPQ/mPQ, image and tissue
protocols), `conic_mpq_plus` (CoNIC mPQ+), `count_r2` (CoNIC R2), `detection_f1` (HoVer-Net
detection and per-class F1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

IntArray = npt.NDArray[np.integer]
FloatArray = npt.NDArray[np.float64]
#: (true_inst, true_cls, pred_inst, pred_cls) maps of one image, each (H, W).
LabelledPair = tuple[IntArray, IntArray | None, IntArray, IntArray | None]


class _Overlap(NamedTuple):
    """Pairwise overlap of two instance maps; row/column i is instance ids[i]."""

    true_ids: IntArray  # (T,)
    pred_ids: IntArray  # (P,)
    inter: npt.NDArray[np.int64]  # (T, P) pixel counts
    true_area: npt.NDArray[np.int64]  # (T,)
    pred_area: npt.NDArray[np.int64]  # (P,)

    @property
    def union(self) -> npt.NDArray[np.int64]:
        return self.true_area[:, None] + self.pred_area[None, :] - self.inter

    @property
    def iou(self) -> FloatArray:
        # every instance has area >= 1, so the union is never zero
        return self.inter / self.union


def _check_map(x: np.ndarray, name: str) -> None:
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) label map, got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.integer) or x.dtype == bool):
        raise ValueError(f"{name} must hold integer labels, got dtype {x.dtype}")
    if x.size and x.min() < 0:
        raise ValueError(f"{name} has negative labels; 0 is background and ids must be >= 0")


def _check_pair(true: np.ndarray, pred: np.ndarray, names: tuple[str, str] = ("true", "pred")) -> None:
    _check_map(true, names[0])
    _check_map(pred, names[1])
    if true.shape != pred.shape:
        raise ValueError(f"{names[0]} {true.shape} and {names[1]} {pred.shape} differ in shape")


def _dense_ids(x: IntArray) -> tuple[IntArray, npt.NDArray[np.intp]]:
    """Map arbitrary ids to 1..N (0 stays background).

    Returns the sorted foreground ids (N,) and an index map of x's shape with values in 0..N.
    """
    flat = x.ravel().astype(np.int64, copy=False)
    top = int(flat.max()) if flat.size else 0
    if top <= max(flat.size, 1 << 16):
        # a lookup table is ~10x faster than np.unique's sort when ids are not huge
        present = np.bincount(flat, minlength=top + 1) > 0
        present[0] = True
        lut = np.cumsum(present) - 1
        return np.flatnonzero(present)[1:], lut[flat].reshape(x.shape)
    ids, index = np.unique(flat, return_inverse=True)
    if ids[0] != 0:
        return ids, (index + 1).reshape(x.shape)
    return ids[1:], index.reshape(x.shape)


def _overlap(true: IntArray, pred: IntArray) -> _Overlap:
    """Contingency table of two instance maps in one bincount over combined ids."""
    true_ids, t = _dense_ids(true)
    pred_ids, p = _dense_ids(pred)
    n_t, n_p = true_ids.size + 1, pred_ids.size + 1
    table = np.bincount((t * n_p + p).ravel(), minlength=n_t * n_p).reshape(n_t, n_p)
    return _Overlap(true_ids, pred_ids, table[1:, 1:], table[1:, :].sum(1), table[:, 1:].sum(0))


def _pq_from_counts(
    tp: npt.ArrayLike, fp: npt.ArrayLike, fn: npt.ArrayLike, iou_sum: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """DQ, SQ and PQ from match counts; NaN where nothing exists, SQ = 0 where nothing matched."""
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
    _check_pair(true, pred)
    if match_iou < 0:
        raise ValueError(f"match_iou must be >= 0, got {match_iou}")
    ov = _overlap(true, pred)
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
    dq, sq, pq = _pq_from_counts(tp, fp, fn, iou_sum)
    return {"dq": float(dq), "sq": float(sq), "pq": float(pq), "tp": tp, "fp": fp, "fn": fn, "iou_sum": iou_sum}


def _aji(ov: _Overlap, rows: npt.NDArray[np.intp], cols: npt.NDArray[np.intp]) -> float:
    """AJI from matched (row, col) pairs: unmatched GT and never-chosen predictions join the union."""
    inter = ov.inter[rows, cols].sum()
    union = ov.union[rows, cols].sum()
    unmatched_true = np.ones(ov.true_ids.size, bool)
    unmatched_true[rows] = False
    unused_pred = np.ones(ov.pred_ids.size, bool)
    unused_pred[cols] = False
    union += ov.true_area[unmatched_true].sum() + ov.pred_area[unused_pred].sum()
    return float(inter / union) if union > 0 else float("nan")


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
    _check_pair(true, pred)
    ov = _overlap(true, pred)
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
    _check_pair(true, pred)
    ov = _overlap(true, pred)
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
    _check_pair(true, pred)
    t, p = true > 0, pred > 0
    total = int(t.sum()) + int(p.sum())
    return 2.0 * int((t & p).sum()) / total if total else float("nan")


def _class_instances(inst: IntArray, cls: IntArray, c: int) -> IntArray:
    """Instance map restricted to the pixels of class c (CoNIC `inst * (cls == c)`)."""
    return np.where(cls == c, inst, 0)


def pannuke_pq(
    true_inst: IntArray,
    true_cls: IntArray,
    pred_inst: IntArray,
    pred_cls: IntArray,
    n_classes: int,
    match_iou: float = 0.5,
) -> dict[str, float | FloatArray]:
    """PanNuke per-image binary and per-class PQ (TissueImageAnalytics/PanNuke-metrics).

    Class c's instances are the instance map restricted to pixels of class c, as in the CoNIC
    code; with class maps that are constant inside each instance (PanNuke GT, and predictions
    whose class is voted per instance) this is exactly the official per-class channel.

    Parameters
    ----------
    true_inst, pred_inst : (H, W) integer instance maps, 0 = background.
    true_cls, pred_cls : (H, W) integer class maps, classes 1..n_classes, 0 = background.
    n_classes : number of foreground classes.
    match_iou : IoU threshold passed to `panoptic_quality`.

    Returns
    -------
    dict with `bpq`, `bdq`, `bsq` (binary, over all instances; NaN when the GT has no
    instance), `pq`, `dq`, `sq` ((n_classes,) float arrays, entry c-1 for class c; NaN when the
    GT has no instance of c, even if c is predicted) and `mpq`, `mdq`, `msq` (NaN-mean over
    classes; NaN when every class is NaN).
    """
    _check_pair(true_inst, pred_inst, ("true_inst", "pred_inst"))
    _check_pair(true_cls, pred_cls, ("true_cls", "pred_cls"))
    _check_pair(true_inst, true_cls, ("true_inst", "true_cls"))
    out: dict[str, float | FloatArray] = {}
    binary = panoptic_quality(true_inst, pred_inst, match_iou)
    gt_empty = not true_inst.any()
    for key in ("pq", "dq", "sq"):
        out[f"b{key}"] = float("nan") if gt_empty else binary[key]
    per_class = np.full((3, n_classes), np.nan)
    for c in range(1, n_classes + 1):
        t = _class_instances(true_inst, true_cls, c)
        if t.any():
            r = panoptic_quality(t, _class_instances(pred_inst, pred_cls, c), match_iou)
            per_class[:, c - 1] = r["pq"], r["dq"], r["sq"]
    for row, key in zip(per_class, ("pq", "dq", "sq"), strict=True):
        out[key] = row
        out[f"m{key}"] = _nanmean(row)
    return out


def _nanmean(x: npt.ArrayLike) -> float:
    """Mean over the non-NaN entries; NaN (without a warning) when there are none."""
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def aggregate_pannuke(
    per_image_results: Sequence[dict[str, float | FloatArray]], tissues: Sequence[str]
) -> dict[str, dict]:
    """Dataset-level PanNuke bPQ and mPQ under both protocols in use.

    Parameters
    ----------
    per_image_results : `pannuke_pq` outputs, one per image.
    tissues : tissue name of each image, same order.

    Returns
    -------
    dict with
    `image_mean` (CISCA / CellViT logs): `bpq`, `mpq`, `mdq`, `msq` = NaN-mean over images of
    the per-image values, and `pq`, `dq`, `sq` = per-class NaN-mean over images ((C,) arrays);
    `tissue_mean` (official PanNuke-metrics): `per_tissue` = {tissue: {`bpq`, `mpq`,
    `n_images`}} with NaN-means over that tissue's images, then `bpq`, `mpq` = NaN-mean over
    tissues and `bpq_std`, `mpq_std` = their population std (ddof=0) over tissues.
    """
    if len(per_image_results) != len(tissues):
        raise ValueError(f"{len(per_image_results)} results but {len(tissues)} tissue names")
    image: dict[str, float | FloatArray] = {
        key: _nanmean([r[key] for r in per_image_results]) for key in ("bpq", "mpq", "mdq", "msq")
    }
    for key in ("pq", "dq", "sq"):
        stacked = np.array([r[key] for r in per_image_results], dtype=np.float64)
        image[key] = np.array([_nanmean(col) for col in stacked.T])
    per_tissue = {}
    for name in sorted(set(tissues)):
        members = [r for r, t in zip(per_image_results, tissues, strict=True) if t == name]
        per_tissue[name] = {
            "bpq": _nanmean([r["bpq"] for r in members]),
            "mpq": _nanmean([r["mpq"] for r in members]),
            "n_images": len(members),
        }
    tissue: dict[str, object] = {"per_tissue": per_tissue}
    for key in ("bpq", "mpq"):
        values = np.array([v[key] for v in per_tissue.values()], dtype=np.float64)
        values = values[~np.isnan(values)]
        tissue[key] = float(values.mean()) if values.size else float("nan")
        tissue[f"{key}_std"] = float(values.std()) if values.size else float("nan")
    return {"image_mean": image, "tissue_mean": tissue}


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
    for true_inst, true_cls, pred_inst, pred_cls in samples:
        _check_pair(true_inst, true_cls, ("true_inst", "true_cls"))
        _check_pair(pred_inst, pred_cls, ("pred_inst", "pred_cls"))
        for c in range(1, n_classes + 1):
            r = panoptic_quality(
                _class_instances(true_inst, true_cls, c), _class_instances(pred_inst, pred_cls, c), match_iou
            )
            counts[:, c - 1] += r["tp"], r["fp"], r["fn"], r["iou_sum"]
    dq, sq, pq = _pq_from_counts(*counts)
    return {
        "mpq_plus": _nanmean(pq),
        "pq_plus": pq,
        "dq_plus": dq,
        "sq_plus": sq,
        "tp": counts[0].astype(np.int64),
        "fp": counts[1].astype(np.int64),
        "fn": counts[2].astype(np.int64),
        "iou_sum": counts[3],
    }


def instance_classes(inst: IntArray, cls: IntArray) -> tuple[IntArray, IntArray]:
    """Class of each instance by majority vote of its pixels' classes.

    Background-class (0) pixels inside an instance are ignored unless the instance has no other
    class; ties go to the lowest class id.

    Parameters
    ----------
    inst : (H, W) integer instance map; cls : (H, W) integer class map (0 = background).

    Returns
    -------
    ids (N,) sorted instance ids and classes (N,) int64.
    """
    _check_pair(inst, cls, ("inst", "cls"))
    ids, index = _dense_ids(inst)
    values = cls.ravel().astype(np.int64)
    n_values = int(values.max()) + 1 if values.size else 1
    votes = np.bincount(index.ravel() * n_values + values, minlength=(ids.size + 1) * n_values)
    votes = votes.reshape(ids.size + 1, n_values)[1:]
    has_class = votes[:, 1:].sum(axis=1) > 0
    votes[has_class, 0] = 0
    return ids, votes.argmax(axis=1).astype(np.int64)


def instance_counts(inst: IntArray, cls: IntArray, n_classes: int) -> npt.NDArray[np.int64]:
    """Number of instances of each class 1..n_classes in one image (majority class per instance).

    Returns
    -------
    (n_classes,) int64 counts, entry c-1 for class c; the per-image rows `count_r2` expects.
    """
    _, classes = instance_classes(inst, cls)
    return np.bincount(classes, minlength=n_classes + 1)[1 : n_classes + 1].astype(np.int64)


def count_r2(true_counts: npt.ArrayLike, pred_counts: npt.ArrayLike) -> dict[str, float | FloatArray]:
    """Coefficient of determination of per-image counts (CoNIC task 2; sklearn `r2_score`).

    R2_c = 1 - sum_i (y_ic - yhat_ic)^2 / sum_i (y_ic - mean_i y_ic)^2, per class c. As sklearn
    (force_finite): a class with constant true counts scores 1 if predicted exactly, else 0;
    fewer than two images give NaN.

    Parameters
    ----------
    true_counts, pred_counts : (N,) or (N, C) counts, one row per image.

    Returns
    -------
    dict with `r2_per_class` ((C,) float array; C = 1 for 1-D input) and `r2`, its mean.
    """
    y = np.asarray(true_counts, dtype=np.float64)
    yhat = np.asarray(pred_counts, dtype=np.float64)
    if y.shape != yhat.shape or y.ndim not in (1, 2):
        raise ValueError(f"count arrays must share an (N,) or (N, C) shape, got {y.shape} and {yhat.shape}")
    y, yhat = y.reshape(y.shape[0], -1), yhat.reshape(y.shape[0], -1)
    if y.shape[0] < 2:
        per_class = np.full(y.shape[1], np.nan)
    else:
        residual = ((y - yhat) ** 2).sum(axis=0)
        total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_class = np.where(total > 0, 1.0 - residual / total, np.where(residual == 0, 1.0, 0.0))
    return {"r2": float(per_class.mean()), "r2_per_class": per_class}


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
    _check_map(inst, "inst")
    ids, index = _dense_ids(inst)
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


def _safe_ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def detection_f1(
    samples: Sequence[LabelledPair], radius: float, n_classes: int = 0
) -> dict[str, int | float | FloatArray]:
    """Detection F1 and HoVer-Net per-class F1, with pairs pooled over the whole set.

    Instances are reduced to centroids (`instance_centroids`) and classes (`instance_classes`),
    paired per image by `match_centroids`, and every count is summed over images. Detection:
    P = TP/(TP+FP), R = TP/(TP+FN), F1 = 2TP/(2TP+FP+FN). Per class c, over the pooled pairs
    with GT or prediction of class c (so TN_c = 0 by construction in the reference):
    F1_c = 2TP_c / (2TP_c + 2FP_c + 2FN_c + FP_d,c + FN_d,c),
    P_c = TP_c / (TP_c + 2FP_c + FP_d,c), R_c = TP_c / (TP_c + 2FN_c + FN_d,c), where FP_c / FN_c
    are pairs whose prediction / GT only is c and FP_d,c / FN_d,c unpaired predictions / GT of
    class c. Any ratio with a zero denominator is NaN.

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
    paired_t, paired_p, lone_t, lone_p = [], [], [], []
    for true_inst, true_cls, pred_inst, pred_cls in samples:
        _check_pair(true_inst, pred_inst, ("true_inst", "pred_inst"))
        _, t_xy = instance_centroids(true_inst)
        _, p_xy = instance_centroids(pred_inst)
        pairs, unpaired_t, unpaired_p = match_centroids(t_xy, p_xy, radius)
        if n_classes > 0:
            if true_cls is None or pred_cls is None:
                raise ValueError("detection_f1 needs class maps for every image when n_classes > 0")
            _, t_cls = instance_classes(true_inst, true_cls)
            _, p_cls = instance_classes(pred_inst, pred_cls)
        else:
            t_cls, p_cls = np.zeros(len(t_xy), np.int64), np.zeros(len(p_xy), np.int64)
        paired_t.append(t_cls[pairs[:, 0]])
        paired_p.append(p_cls[pairs[:, 1]])
        lone_t.append(t_cls[unpaired_t])
        lone_p.append(p_cls[unpaired_p])
    pt, pp, ut, up = (np.concatenate(v) if v else np.zeros(0, np.int64) for v in (paired_t, paired_p, lone_t, lone_p))
    tp, fp, fn = pt.size, up.size, ut.size
    out: dict[str, int | float | FloatArray] = {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": _safe_ratio(tp, tp + fp),
        "recall": _safe_ratio(tp, tp + fn),
        "f1": _safe_ratio(2 * tp, 2 * tp + fp + fn),
    }
    if n_classes > 0:
        out["type_accuracy"] = _safe_ratio(int((pt == pp).sum()), tp)
        scores = np.full((3, n_classes), np.nan)
        for c in range(1, n_classes + 1):
            tp_c = int(((pt == c) & (pp == c)).sum())
            fp_c = int(((pt != c) & (pp == c)).sum())
            fn_c = int(((pt == c) & (pp != c)).sum())
            fp_d, fn_d = int((up == c).sum()), int((ut == c).sum())
            scores[:, c - 1] = (
                _safe_ratio(2 * tp_c, 2 * tp_c + 2 * fp_c + 2 * fn_c + fp_d + fn_d),
                _safe_ratio(tp_c, tp_c + 2 * fp_c + fp_d),
                _safe_ratio(tp_c, tp_c + 2 * fn_c + fn_d),
            )
        out["f1_per_class"], out["precision_per_class"], out["recall_per_class"] = scores
    return out
