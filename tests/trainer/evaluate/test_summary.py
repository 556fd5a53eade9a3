"""`summary`: the set-level numbers of evaluate equal the metric functions on the same images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedstore.datasets import get_dataset
from embedstore.imaging.tiling import grid_origins
from embedstore.trainer.evaluate import mean_sd, score_image, score_maps, summarize
from embedstore.trainer.inference.maps import TileMaps
from embedstore.trainer.metrics import (
    aggregate_pannuke,
    conic_mpq_plus,
    detection_f1,
    pannuke_pq,
    panoptic_quality,
)
from embedstore.trainer.postprocess import PostprocessParams, instances_from_maps
from embedstore.trainer.targets.oracle import oracle_maps

CLASSES = ["Epithelial", "Inflammatory", "Connective"]


def test_pooled_metrics_equal_the_metric_functions_on_the_whole_set(scored_pairs: tuple) -> None:
    pairs, scores = scored_pairs
    summary = summarize(scores, ["a", "a", "b", "b", "b", "c"], CLASSES)
    conic = conic_mpq_plus(pairs, 3)
    assert summary["mpq_plus"] == pytest.approx(conic["mpq_plus"])
    assert summary["pq_plus.Inflammatory"] == pytest.approx(conic["pq_plus"][1])
    detection = detection_f1(pairs, 12.0, n_classes=3)
    assert summary["det_f1"] == pytest.approx(detection["f1"])
    assert summary["type_accuracy"] == pytest.approx(detection["type_accuracy"])
    for c, name in enumerate(CLASSES):
        assert summary[f"f1.{name}"] == pytest.approx(detection["f1_per_class"][c], nan_ok=True)
    pannuke = aggregate_pannuke([pannuke_pq(*p, 3) for p in pairs], ["a", "a", "b", "b", "b", "c"])
    assert summary["mpq_image"] == pytest.approx(pannuke["image_mean"]["mpq"])
    assert summary["mpq_group"] == pytest.approx(pannuke["tissue_mean"]["mpq"])
    assert summary["bpq"] == pytest.approx(np.mean([panoptic_quality(p[0], p[2])["pq"] for p in pairs]))


def test_pooled_per_class_numbers_equal_the_metric_functions_exactly(scored_pairs: tuple) -> None:
    pairs, scores = scored_pairs
    summary = summarize(scores, ["g"] * len(scores), CLASSES)
    conic = conic_mpq_plus(pairs, 3)
    detection = detection_f1(pairs, 12.0, n_classes=3)
    for c, name in enumerate(CLASSES):
        for key in ("pq_plus", "dq_plus", "sq_plus"):
            assert summary[f"{key}.{name}"] == pytest.approx(conic[key][c], nan_ok=True)
        for key in ("precision", "recall"):
            assert summary[f"{key}.{name}"] == pytest.approx(detection[f"{key}_per_class"][c], nan_ok=True)
    assert (summary["det_precision"], summary["det_recall"]) == pytest.approx(
        (detection["precision"], detection["recall"]))


def test_binary_averages_skip_images_without_cells() -> None:
    empty = np.zeros((8, 8), np.int32)
    cell = empty.copy()
    cell[2:5, 2:5] = 1
    scores = [score_image(cell, None, cell, None, 0, 6.0), score_image(empty, None, cell, None, 0, 6.0)]
    summary = summarize(scores, ["g", "g"], [])
    assert summary["bpq"] == 1.0 and summary["n_images_scored"] == 1.0
    assert summary["det_precision"] == 0.5  # the false positive on the empty image still counts (pooled)


def test_mean_sd_uses_sample_sd_and_nan_for_one_seed() -> None:
    mean, sd = mean_sd([{"x": 0.2}, {"x": 0.4}, {"x": 0.9}])
    assert mean["x"] == pytest.approx(0.5) and sd["x"] == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))
    assert np.isnan(mean_sd([{"x": 0.3}])[1]["x"])


def test_oracle_maps_of_real_consep_tiles_reach_the_oracle_bpq(real_data: Path) -> None:
    """Exact targets fed through evaluate's scoring reproduce the post-processing oracle (issue 3: ~0.93)."""
    data = get_dataset("consep", real_data / "consep", tile_size=256, merge_types=False)
    k = [s.id for s in data.sources].index("test_3")
    first = sum(len(grid_origins(s.shape, 256, 256)) for s in data.sources[:k])
    tiles = [data.tile(i) for i in range(first, first + 8)]
    assert {t.source for t in tiles} == {"test_3"}
    params = [PostprocessParams.for_dataset("40x", min_size=10)]
    scores, direct = [], []
    for t in tiles:
        contour, directions = oracle_maps(t.instance, "40x")
        scores += score_maps(TileMaps(contour, directions, None), t.instance, None, params, 0, 12.0)
        direct.append(panoptic_quality(t.instance, instances_from_maps(contour, directions, params[0]))["pq"])
    bpq = summarize(scores, ["test_3"] * len(tiles), [])["bpq"]
    assert bpq == pytest.approx(np.mean(direct))
    assert 0.88 <= bpq <= 0.99
