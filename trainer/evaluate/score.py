"""Scoring one image: post-process its maps and reduce the result to the small per-image record the set needs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedstore.trainer.inference.maps import TileMaps
from embedstore.trainer.metrics import (
    MatchedClasses,
    aggregated_jaccard_index,
    aggregated_jaccard_index_plus,
    class_match_counts,
    counts_per_class,
    dice,
    match_instances,
    pannuke_from_counts,
    panoptic_quality,
)
from embedstore.trainer.postprocess import PostprocessParams, cells_from_maps


@dataclass
class ImageScore:
    """Every per-image number the set-level metrics need (small: no pixel maps).

    Attributes
    ----------
    n_true, n_pred : instance counts.
    binary : ``panoptic_quality`` output plus ``aji``, ``aji_plus``, ``dice``.
    pannuke : ``pannuke_pq`` output (None without classes).
    class_counts : (4, C) float64 rows TP, FP, FN, IoU sum per class (CoNIC matching); (4, 0) without classes.
    detection : class ids (int64) of paired GT, paired predictions, unpaired GT and unpaired predictions
        (all 0 without classes), a :class:`~embedstore.trainer.metrics.MatchedClasses`.
    true_counts, pred_counts : (C,) instance counts per class ((1,) total without classes).
    """

    n_true: int
    n_pred: int
    binary: dict[str, float]
    pannuke: dict[str, Any] | None
    class_counts: np.ndarray
    detection: MatchedClasses
    true_counts: np.ndarray
    pred_counts: np.ndarray


def score_image(true_inst: np.ndarray, true_cls: np.ndarray | None, pred_inst: np.ndarray,
                pred_cls: np.ndarray | None, n_classes: int, radius: float) -> ImageScore:
    """Score one predicted instance (and class) map against the ground truth.

    Each class is matched once (:func:`~embedstore.trainer.metrics.class_match_counts`); PanNuke's per-image
    PQ and CoNIC's pooled counts both read that one matching.

    Parameters
    ----------
    true_inst, pred_inst : (H, W) integer instance maps, 0 = background.
    true_cls, pred_cls : (H, W) integer class maps (1..n_classes), or None when ``n_classes == 0``.
    n_classes : number of cell classes (0 = binary).
    radius : detection pairing radius in pixels (:func:`~embedstore.trainer.metrics.detection_radius`).
    """
    if n_classes > 0 and (true_cls is None or pred_cls is None):
        raise ValueError("score_image needs class maps when n_classes > 0")
    binary: dict[str, float] = dict(panoptic_quality(true_inst, pred_inst))
    binary["aji"] = aggregated_jaccard_index(true_inst, pred_inst)
    binary["aji_plus"] = aggregated_jaccard_index_plus(true_inst, pred_inst)
    binary["dice"] = dice(true_inst, pred_inst)
    detection = match_instances(true_inst, true_cls, pred_inst, pred_cls, radius, n_classes)
    true_classes = np.concatenate([detection.paired_true, detection.unpaired_true])
    pred_classes = np.concatenate([detection.paired_pred, detection.unpaired_pred])
    if n_classes > 0:
        class_counts = class_match_counts(true_inst, true_cls, pred_inst, pred_cls, n_classes)
        pannuke = pannuke_from_counts(binary, class_counts)
        true_counts = counts_per_class(true_classes, n_classes)
        pred_counts = counts_per_class(pred_classes, n_classes)
    else:
        pannuke = None
        class_counts = np.zeros((4, 0))
        true_counts, pred_counts = np.array([true_classes.size]), np.array([pred_classes.size])
    return ImageScore(n_true=int(true_classes.size), n_pred=int(pred_classes.size), binary=binary, pannuke=pannuke,
                      class_counts=class_counts, detection=detection,
                      true_counts=true_counts.astype(np.int64), pred_counts=pred_counts.astype(np.int64))


def score_maps(maps: TileMaps, true_inst: np.ndarray, true_cls: np.ndarray | None,
               params: Sequence[PostprocessParams], n_classes: int, radius: float) -> list[ImageScore]:
    """Post-process ``maps`` with each parameter set and score the result: one :class:`ImageScore` each."""
    scores = []
    for p in params:
        cells = cells_from_maps(maps.contour, maps.directions, maps.types, p)
        scores.append(score_image(true_inst, true_cls if n_classes else None, cells.instances,
                                  cells.classes if n_classes else None, n_classes, radius))
    return scores
