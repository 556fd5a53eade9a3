"""`overlap`: the hand-written contingency table, with `skimage.metrics.contingency_table` as its oracle."""

import numpy as np
import pytest
from skimage.metrics import contingency_table

from embedstore.trainer.metrics.overlap import dense_ids, overlap_table


def _check_against_skimage(true: np.ndarray, pred: np.ndarray) -> None:
    ov = overlap_table(true, pred)
    table = contingency_table(true, pred).toarray()
    np.testing.assert_array_equal(ov.true_ids, np.setdiff1d(np.unique(true), [0]))
    np.testing.assert_array_equal(ov.pred_ids, np.setdiff1d(np.unique(pred), [0]))
    np.testing.assert_array_equal(ov.inter, table[np.ix_(ov.true_ids, ov.pred_ids)])
    np.testing.assert_array_equal(ov.true_area, table[ov.true_ids].sum(axis=1))
    np.testing.assert_array_equal(ov.pred_area, table[:, ov.pred_ids].sum(axis=0))


def test_overlap_equals_skimage_contingency_table_on_real_consep_tiles(consep_tiles):
    for inst, _ in consep_tiles:
        shifted = np.roll(inst, (3, -2), axis=(0, 1))  # a prediction that misses every border by a few px
        _check_against_skimage(inst, shifted)


def test_overlap_equals_skimage_contingency_table_with_empty_maps(consep_tiles):
    inst = consep_tiles[0][0]
    _check_against_skimage(inst, np.zeros_like(inst))
    _check_against_skimage(np.zeros_like(inst), inst)


def test_dense_ids_give_the_same_index_on_the_lookup_and_the_unique_paths():
    rng = np.random.default_rng(0)
    small = rng.choice(np.array([0, 0, 3, 7, 40]), size=(16, 16))
    huge = np.where(small > 0, small * 10**9 + 1, 0)  # above the lookup-table limit: np.unique
    ids_small, index_small = dense_ids(small)
    ids_huge, index_huge = dense_ids(huge)
    assert list(ids_small) == [3, 7, 40] and list(ids_huge) == [3 * 10**9 + 1, 7 * 10**9 + 1, 40 * 10**9 + 1]
    np.testing.assert_array_equal(index_small, index_huge)


def test_iou_of_the_overlap_table():
    true = np.array([[1, 1, 1, 0]], np.int32)
    pred = np.array([[0, 5, 5, 5]], np.int32)
    assert overlap_table(true, pred).iou[0, 0] == pytest.approx(2 / 4)
