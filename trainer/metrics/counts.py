"""Instance classes and counts per image, and CoNIC's R2 of per-image counts."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from embedstore.trainer.metrics.overlap import FloatArray, IntArray, check_label_pair, dense_ids


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
    check_label_pair(inst, cls, ("inst", "cls"))
    ids, index = dense_ids(inst)
    values = cls.ravel().astype(np.int64)
    n_values = int(values.max()) + 1 if values.size else 1
    votes = np.bincount(index.ravel() * n_values + values, minlength=(ids.size + 1) * n_values)
    votes = votes.reshape(ids.size + 1, n_values)[1:]
    has_class = votes[:, 1:].sum(axis=1) > 0
    votes[has_class, 0] = 0
    return ids, votes.argmax(axis=1).astype(np.int64)


def counts_per_class(classes: npt.ArrayLike, n_classes: int) -> npt.NDArray[np.int64]:
    """(n_classes,) int64 number of entries of each class 1..n_classes in an (N,) array of class ids."""
    classes = np.asarray(classes, dtype=np.int64)
    return np.bincount(classes, minlength=n_classes + 1)[1 : n_classes + 1].astype(np.int64)


def instance_counts(inst: IntArray, cls: IntArray, n_classes: int) -> npt.NDArray[np.int64]:
    """Number of instances of each class 1..n_classes in one image (majority class per instance).

    Returns
    -------
    (n_classes,) int64 counts, entry c-1 for class c; the per-image rows `count_r2` expects.
    """
    _, classes = instance_classes(inst, cls)
    return counts_per_class(classes, n_classes)


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
