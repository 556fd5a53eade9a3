"""Maps -> cells: the one post-processing call that evaluation and prediction share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedstore.trainer.postprocess.classify import classify_instances
from embedstore.trainer.postprocess.instances import instances_from_maps
from embedstore.trainer.postprocess.params import PostprocessParams


@dataclass(frozen=True)
class Cells:
    """The cells found in one image's maps.

    Attributes
    ----------
    instances : (H, W) int32
        Instance ids 1..n, 0 = background.
    classes : (H, W) uint8 or None
        Each instance's class on its pixels (0 elsewhere); None when the run has no class head.
    per_instance : dict[int, tuple[int, float]]
        Instance id -> (class id, probability): with a class head, the chosen class and its mean
        probability over the instance (:func:`classify_instances`); without one, class 1 and the mean
        foreground probability (boundary + body).
    """

    instances: np.ndarray
    classes: np.ndarray | None
    per_instance: dict[int, tuple[int, float]]


def cells_from_maps(contour: np.ndarray, directions: np.ndarray, types: np.ndarray | None,
                    params: PostprocessParams) -> Cells:
    """Instances, class map and per-instance (class, probability) from predicted maps.

    Parameters
    ----------
    contour : (3, H, W) float
        Softmax over boundary, body, background.
    directions : (4, H, W) float
        h, v, tl, bl direction maps.
    types : (n_types + 1, H, W) float or None
        Class softmax (channel 0 = background), None for runs without a class head.
    params : PostprocessParams
    """
    instances = instances_from_maps(contour, directions, params)
    if types is not None:
        classes, per_instance = classify_instances(instances, types)
        return Cells(instances, classes, per_instance)
    flat = instances.ravel()
    area = np.bincount(flat)
    foreground = np.bincount(flat, weights=(contour[0] + contour[1]).ravel(), minlength=area.size)
    per_instance = {int(i): (1, float(foreground[i] / area[i])) for i in np.flatnonzero(area) if i > 0}
    return Cells(instances, None, per_instance)
