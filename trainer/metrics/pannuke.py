"""PanNuke PQ: per image (binary and per class) and over a set (image-mean and tissue-mean protocols)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from embedstore.trainer.metrics.overlap import FloatArray, IntArray
from embedstore.trainer.metrics.panoptic import class_match_counts, panoptic_quality, pq_from_counts
from embedstore.trainer.metrics.reductions import nanmean


def pannuke_from_counts(binary: dict[str, float | int], class_counts: FloatArray) -> dict[str, float | FloatArray]:
    """One image's PanNuke result from its binary `panoptic_quality` and its per-class match counts.

    A class whose GT has no instance (TP + FN = 0) is NaN even if predicted; the binary values are
    NaN when the GT has no instance at all.

    Parameters
    ----------
    binary : `panoptic_quality` of the two instance maps.
    class_counts : (4, C) `class_match_counts` of the same image.

    Returns
    -------
    The `pannuke_pq` dict.
    """
    gt_empty = binary["tp"] + binary["fn"] == 0
    out: dict[str, float | FloatArray] = {f"b{key}": math.nan if gt_empty else float(binary[key])
                                          for key in ("pq", "dq", "sq")}
    tp, fp, fn, iou_sum = class_counts
    dq, sq, pq = pq_from_counts(tp, fp, fn, iou_sum)
    in_truth = tp + fn > 0
    for key, row in (("pq", pq), ("dq", dq), ("sq", sq)):
        out[key] = np.where(in_truth, row, np.nan)
        out[f"m{key}"] = nanmean(out[key])
    return out


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
    counts = class_match_counts(true_inst, true_cls, pred_inst, pred_cls, n_classes, match_iou)
    return pannuke_from_counts(panoptic_quality(true_inst, pred_inst, match_iou), counts)


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
        key: nanmean([r[key] for r in per_image_results]) for key in ("bpq", "mpq", "mdq", "msq")
    }
    for key in ("pq", "dq", "sq"):
        stacked = np.array([r[key] for r in per_image_results], dtype=np.float64)
        image[key] = np.array([nanmean(col) for col in stacked.T])
    per_tissue = {}
    for name in sorted(set(tissues)):
        members = [r for r, t in zip(per_image_results, tissues, strict=True) if t == name]
        per_tissue[name] = {
            "bpq": nanmean([r["bpq"] for r in members]),
            "mpq": nanmean([r["mpq"] for r in members]),
            "n_images": len(members),
        }
    tissue: dict[str, object] = {"per_tissue": per_tissue}
    for key in ("bpq", "mpq"):
        values = np.array([v[key] for v in per_tissue.values()], dtype=np.float64)
        values = values[~np.isnan(values)]
        tissue[key] = nanmean(values)
        tissue[f"{key}_std"] = float(values.std()) if values.size else math.nan
    return {"image_mean": image, "tissue_mean": tissue}
