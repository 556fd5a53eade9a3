"""`score`: one image's record holds exactly what the metric functions say about that image."""

from __future__ import annotations

import numpy as np
import pytest

from embedstore.trainer.evaluate import score_image
from embedstore.trainer.metrics import (
    aggregated_jaccard_index,
    class_match_counts,
    instance_counts,
    pannuke_pq,
    panoptic_quality,
)


def test_score_image_matches_pannuke_pq_per_class(scored_pairs: tuple) -> None:
    pairs, scores = scored_pairs
    for pair, score in zip(pairs, scores):
        expected = pannuke_pq(*pair, 3)
        np.testing.assert_allclose(score.pannuke["pq"], expected["pq"])
        assert score.pannuke["mpq"] == pytest.approx(expected["mpq"], nan_ok=True)


def test_score_image_holds_the_per_image_metrics_and_counts(scored_pairs: tuple) -> None:
    pairs, scores = scored_pairs
    for (inst, cls, pred, pred_cls), score in zip(pairs, scores):
        assert score.binary["pq"] == panoptic_quality(inst, pred)["pq"]
        assert score.binary["aji"] == aggregated_jaccard_index(inst, pred)
        np.testing.assert_array_equal(score.class_counts, class_match_counts(inst, cls, pred, pred_cls, 3))
        np.testing.assert_array_equal(score.true_counts, instance_counts(inst, cls, 3))
        np.testing.assert_array_equal(score.pred_counts, instance_counts(pred, pred_cls, 3))
        assert score.n_true == len(np.setdiff1d(np.unique(inst), [0]))


def test_score_image_without_classes_counts_all_instances() -> None:
    true = np.zeros((16, 16), np.int32)
    true[1:4, 1:4], true[8:12, 8:12] = 3, 9
    pred = np.where(true == 3, 1, 0).astype(np.int32)
    score = score_image(true, None, pred, None, 0, 6.0)
    assert (score.n_true, score.n_pred) == (2, 1)
    assert list(score.true_counts) == [2] and list(score.pred_counts) == [1]
    assert score.pannuke is None and score.class_counts.shape == (4, 0)
    assert list(score.detection.paired_true) == [0] and list(score.detection.unpaired_true) == [0]


def test_score_image_refuses_missing_class_maps() -> None:
    cell = np.zeros((8, 8), np.int32)
    cell[2:5, 2:5] = 1
    with pytest.raises(ValueError, match="class maps"):
        score_image(cell, None, cell, None, 2, 6.0)
