"""Set-level numbers of one seed from its per-image scores, and their mean and sd over seeds.

Every formula is a call into :mod:`embedstore.trainer.metrics`: binary numbers are image means, detection
pools the centroid pairs, CoNIC mPQ+ pools the per-class counts, PanNuke averages per image and per group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from embedstore.trainer.evaluate.score import ImageScore
from embedstore.trainer.metrics import (
    aggregate_pannuke,
    count_r2,
    detection_from_classes,
    mpq_plus_from_counts,
    pool_matches,
)
from embedstore.trainer.metrics.reductions import nanmean, ratio

#: What each family of numbers in metrics.json means (see the module docstring of evaluate.run).
PROTOCOLS = {
    "binary": "bpq/bdq/bsq (IoU > 0.5 unique matching), aji, aji_plus, dice, pq_precision, pq_recall: per "
              "image, mean over images whose ground truth has cells (CISCA / HoVer-Net)",
    "detection": "det_precision/det_recall/det_f1: centroids paired by Hungarian matching within "
                 "3 um (12 px at 40x, 6 px at 20x), pairs pooled over the set; f1/precision/recall.<class>: "
                 "HoVer-Net per-class F1 on the pooled pairs",
    "pannuke": "mpq_image / bpq_image: PanNuke per-image PQ (class NaN when absent from the ground truth), "
               "mean over images (CISCA / CellViT logs); mpq_group / bpq_group: mean per group (tissue) "
               "then over groups (PanNuke-metrics official protocol); pq.<class>: per-class image mean",
    "conic": "mpq_plus, pq_plus/dq_plus/sq_plus.<class>: CoNIC mPQ+, TP/FP/FN/IoU pooled per class over the set",
    "counts": "r2: CoNIC multi-class R2 of per-image instance counts (mean over classes; binary count R2 "
              "without classes); r2_binary: R2 of total counts; r2.<class>: per class",
}


def _detection(scores: Sequence[ImageScore], names: Sequence[str]) -> dict[str, float]:
    """Pooled detection numbers under their metrics.json names (``det_*``, ``<metric>.<class>``)."""
    pooled = detection_from_classes(*pool_matches([s.detection for s in scores]), len(names))
    out = {"det_precision": pooled["precision"], "det_recall": pooled["recall"], "det_f1": pooled["f1"]}
    if names:
        out["type_accuracy"] = pooled["type_accuracy"]
        for c, name in enumerate(names):
            for key in ("f1", "precision", "recall"):
                out[f"{key}.{name}"] = pooled[f"{key}_per_class"][c]
    return out


def summarize(scores: Sequence[ImageScore], groups: Sequence[str], class_names: Sequence[str]) -> dict[str, float]:
    """Set-level metrics of one seed: a flat ``{name: float}`` dict (per-class keys ``<metric>.<class>``).

    Parameters
    ----------
    scores : one :class:`ImageScore` per image of the set.
    groups : group (tissue / source) of each image, for the PanNuke per-group protocol.
    class_names : names of classes 1..C (empty for a binary run).

    See :data:`PROTOCOLS` for what each number means.
    """
    if len(scores) != len(groups):
        raise ValueError(f"{len(scores)} scores but {len(groups)} groups")
    names = list(class_names)
    with_cells = [s for s in scores if s.n_true > 0]
    out: dict[str, float] = {"n_images": float(len(scores)), "n_images_scored": float(len(with_cells)),
                             "n_true": float(sum(s.n_true for s in scores)),
                             "n_pred": float(sum(s.n_pred for s in scores))}
    for key, name in (("pq", "bpq"), ("dq", "bdq"), ("sq", "bsq"), ("aji", "aji"), ("aji_plus", "aji_plus"),
                      ("dice", "dice")):
        out[name] = nanmean([s.binary[key] for s in with_cells])
    out["pq_precision"] = nanmean([ratio(s.binary["tp"], s.binary["tp"] + s.binary["fp"]) for s in with_cells])
    out["pq_recall"] = nanmean([ratio(s.binary["tp"], s.binary["tp"] + s.binary["fn"]) for s in with_cells])
    out.update(_detection(scores, names))
    true_counts = np.stack([s.true_counts for s in scores])
    pred_counts = np.stack([s.pred_counts for s in scores])
    r2 = count_r2(true_counts, pred_counts)
    out["r2"] = r2["r2"]
    out["r2_binary"] = count_r2(true_counts.sum(1), pred_counts.sum(1))["r2"]
    if names:
        for name, value in zip(names, r2["r2_per_class"]):
            out[f"r2.{name}"] = float(value)
        pannuke = aggregate_pannuke([s.pannuke for s in scores], list(groups))
        out["mpq_image"] = pannuke["image_mean"]["mpq"]
        out["bpq_image"] = pannuke["image_mean"]["bpq"]
        for key in ("mpq", "bpq"):
            out[f"{key}_group"] = pannuke["tissue_mean"][key]
            out[f"{key}_group_sd"] = pannuke["tissue_mean"][f"{key}_std"]
        for name, value in zip(names, pannuke["image_mean"]["pq"]):
            out[f"pq.{name}"] = float(value)
        conic = mpq_plus_from_counts(np.sum([s.class_counts for s in scores], axis=0))
        out["mpq_plus"] = conic["mpq_plus"]
        for c, name in enumerate(names):
            for key in ("pq_plus", "dq_plus", "sq_plus"):
                out[f"{key}.{name}"] = float(conic[key][c])
    return {k: float(v) for k, v in out.items()}


def mean_sd(per_seed: Sequence[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and sample sd (ddof 1; NaN for one seed) of every metric over seeds, ignoring NaN values."""
    keys = list(dict.fromkeys(k for d in per_seed for k in d))
    mean, sd = {}, {}
    for k in keys:
        values = np.array([d.get(k, math.nan) for d in per_seed], dtype=np.float64)
        values = values[~np.isnan(values)]
        mean[k] = nanmean(values)
        sd[k] = float(values.std(ddof=1)) if values.size > 1 else math.nan
    return mean, sd
