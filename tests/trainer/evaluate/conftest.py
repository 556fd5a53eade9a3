"""Shared fixtures of the evaluate tests: model-like maps of synthetic images, post-processed and scored."""

from __future__ import annotations

import numpy as np
import pytest

from embedstore.datasets.synthetic import render
from embedstore.trainer.evaluate import ImageScore, score_maps
from embedstore.trainer.inference.maps import TileMaps
from embedstore.trainer.postprocess import PostprocessParams, classify_instances, instances_from_maps
from embedstore.trainer.targets.oracle import realistic_maps


@pytest.fixture(scope="module")
def scored_pairs() -> tuple[list[tuple], list[ImageScore]]:
    """Six synthetic 96 px H&E images with noisy model-like maps, post-processed and scored."""
    rng = np.random.default_rng(3)
    params = [PostprocessParams.for_dataset("40x", min_size=20)]
    pairs, scores = [], []
    for i in range(6):
        _, inst, cls = render("he", 1, i, 96)
        contour, directions = realistic_maps(inst, "40x", rng)
        logits = 3.0 * (cls[None] == np.arange(4)[:, None, None]) + rng.standard_normal((4, 96, 96))
        types = np.exp(logits) / np.exp(logits).sum(0)
        maps = TileMaps(contour, directions, types.astype(np.float32))
        pred = instances_from_maps(contour, directions, params[0])
        pred_cls = classify_instances(pred, maps.types)[0]
        pairs.append((inst, cls, pred, pred_cls))
        scores.extend(score_maps(maps, inst, cls, params, 3, 12.0))
    return pairs, scores
