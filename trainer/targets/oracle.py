"""Exact and model-like prediction maps made from labels: the post-processing oracle and benchmark inputs."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from embedstore.trainer.targets.maps import direction_maps, three_class_map


def oracle_maps(instance: np.ndarray, magnification: str | float) -> tuple[np.ndarray, np.ndarray]:
    """The exact training targets of an instance map, shaped as predictions.

    Feeding them to :func:`instances_from_maps` measures what the post-processing alone loses
    (the "oracle" check of docs/postprocess.md).

    Returns
    -------
    contour_prob : (3, H, W) float32
        One-hot boundary / body / background from ``targets.three_class_map``.
    directions : (4, H, W) float32
        ``targets.direction_maps``.
    """
    classes = three_class_map(instance, magnification)
    onehot = (classes[None] == np.arange(3)[:, None, None]).astype(np.float32)
    return onehot, direction_maps(instance)


def realistic_maps(instance: np.ndarray, magnification: str | float, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Model-like maps for an instance map: the oracle maps blurred, with smooth noise.

    The one-hot becomes the softmax of blurred logits plus smooth noise and the direction maps
    are blurred and jittered, so the benchmark floods soft, imperfect relief as it would for a
    trained decoder rather than the flat plateaus of exact targets.

    Returns
    -------
    contour_prob : (3, H, W) float32
    directions : (4, H, W) float32 in [-1, 1]
    """
    onehot, directions = oracle_maps(instance, magnification)
    noise = ndi.gaussian_filter(rng.standard_normal(onehot.shape, np.float32), (0, 2, 2))
    logits = 6.0 * ndi.gaussian_filter(onehot, (0, 1, 1)) + 2.0 * noise
    contour_prob = np.exp(logits - logits.max(axis=0))
    contour_prob /= contour_prob.sum(axis=0)
    jitter = ndi.gaussian_filter(rng.standard_normal(directions.shape, np.float32), (0, 2, 2))
    directions = np.clip(ndi.gaussian_filter(directions, (0, 1, 1)) + 0.3 * jitter, -1.0, 1.0)
    return contour_prob, directions.astype(np.float32)
