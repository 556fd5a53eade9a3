"""One class per instance from the class softmax (CISCA's argmax of summed probabilities)."""

from __future__ import annotations

import numpy as np

from embedstore.errors import EmbedstoreError


def classify_instances(instance: np.ndarray, type_prob: np.ndarray
                       ) -> tuple[np.ndarray, dict[int, tuple[int, float]]]:
    """One class per instance from the class softmax summed over the instance's pixels.

    As in the reference, the argmax includes background (channel 0); when background wins, the
    argmax over the cell classes 1..n is taken instead.

    Parameters
    ----------
    instance : (H, W) int
        Instance ids, 0 = background.
    type_prob : (n_types + 1, H, W) float
        Class probabilities, channel 0 = background.

    Returns
    -------
    class_map : (H, W) uint8
        The chosen class on each instance's pixels, 0 elsewhere.
    per_instance : dict[int, tuple[int, float]]
        Instance id -> (class id, mean probability of that class over the instance).
    """
    instance = np.asarray(instance)
    if not np.issubdtype(instance.dtype, np.integer) or (instance.size and instance.min() < 0):
        raise EmbedstoreError(f"instance map must hold non-negative integer ids, got dtype {instance.dtype}")
    if type_prob.ndim != 3 or type_prob.shape[1:] != instance.shape or type_prob.shape[0] < 2:
        raise EmbedstoreError(f"type_prob must be (n_types + 1, H, W) matching the instance map "
                              f"{instance.shape}, got {type_prob.shape}")
    flat = instance.ravel()
    area = np.bincount(flat)
    ids = np.flatnonzero(area)
    ids = ids[ids > 0]
    if ids.size == 0:
        return np.zeros(instance.shape, np.uint8), {}
    sums = np.stack([np.bincount(flat, weights=plane.ravel(), minlength=area.size)[ids] for plane in type_prob])
    classes = sums.argmax(axis=0)
    background_won = classes == 0
    classes[background_won] = sums[1:, background_won].argmax(axis=0) + 1
    lut = np.zeros(area.size, np.uint8)
    lut[ids] = classes
    mean_prob = sums[classes, np.arange(ids.size)] / area[ids]
    per_instance = {int(i): (int(c), float(p)) for i, c, p in zip(ids, classes, mean_prob)}
    return lut[instance], per_instance
