"""`detection`: centroids, Hungarian pairing within a radius, pooled detection and per-class F1."""

from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from scipy import ndimage as ndi

from embedstore.trainer.metrics import (
    detection_f1,
    detection_from_classes,
    detection_radius,
    instance_centroids,
    instance_classes,
    match_centroids,
    match_instances,
    pool_matches,
)


def test_detection_radius_is_three_microns():
    assert detection_radius(0.25) == pytest.approx(12.0)
    assert detection_radius(0.5) == pytest.approx(6.0)


def test_instance_centroids_match_the_real_labels_stored_centroids(real_data: Path):
    data = sio.loadmat(real_data / "pannuke_like_cellseg_models" / "masks" / "patch2.mat")
    ids, centroids = instance_centroids(data["inst_map"])
    assert len(ids) == 47
    assert np.allclose(centroids[:, ::-1], data["inst_centroid"])  # stored as (x, y)


def test_instance_centroids_equal_scipy_center_of_mass_on_real_consep_tiles(consep_tiles):
    for inst, _ in consep_tiles:
        ids, centroids = instance_centroids(inst)
        expected = np.array(ndi.center_of_mass(np.ones_like(inst), inst, ids)).reshape(-1, 2)
        np.testing.assert_array_equal(ids, np.setdiff1d(np.unique(inst), [0]))
        np.testing.assert_allclose(centroids, expected, rtol=0, atol=1e-9)


def test_instance_classes_match_the_real_labels_stored_types(real_data: Path):
    data = sio.loadmat(real_data / "pannuke_like_cellseg_models" / "masks" / "patch3.mat")
    _, classes = instance_classes(data["inst_map"], data["type_map"])
    assert np.array_equal(classes, data["inst_type"].ravel())


def test_pair_at_exactly_the_radius_is_kept(dots):
    true, pred = dots((20, 20), (5, 5, 1)), dots((20, 20), (5, 17, 3))  # 12 px apart
    assert detection_f1([(true, None, pred, None)], radius=12)["tp"] == 1


def test_pair_beyond_the_radius_is_dropped(dots):
    true, pred = dots((20, 20), (5, 5, 1)), dots((20, 20), (5, 17, 3))
    r = detection_f1([(true, None, pred, None)], radius=11.99)
    assert (r["tp"], r["fp"], r["fn"]) == (0, 1, 1)


def test_match_centroids_minimises_total_distance():
    # GT a=(0,0), b=(0,4); pred p=(0,3), q=(0,7). Greedy pairs b-p (1), leaving a-q 7 apart;
    # the assignment pairs a-p (3) and b-q (3).
    pairs, lone_t, lone_p = match_centroids(np.array([[0, 0], [0, 4]]), np.array([[0, 3], [0, 7]]), radius=5)
    assert pairs.tolist() == [[0, 0], [1, 1]]
    assert lone_t.size == 0 and lone_p.size == 0


@pytest.fixture
def per_class_case(dots) -> list:
    shape = (40, 40)
    img1 = (
        dots(shape, (2, 2, 1), (2, 20, 2), (20, 2, 3)),
        dots(shape, (2, 2, 1), (2, 20, 1), (20, 2, 2)),
        dots(shape, (2, 3, 7), (2, 21, 8), (30, 30, 9)),
        dots(shape, (2, 3, 1), (2, 21, 2), (30, 30, 1)),
    )
    img2 = (
        dots(shape, (5, 5, 1)),
        dots(shape, (5, 5, 2)),
        dots(shape, (5, 6, 4), (38, 38, 5)),
        dots(shape, (5, 6, 2), (38, 38, 2)),
    )
    return [img1, img2]


def test_detection_f1_pools_pairs_over_images(per_class_case):
    r = detection_f1(per_class_case, radius=12, n_classes=2)
    assert (r["tp"], r["fp"], r["fn"]) == (3, 2, 1)
    assert r["precision"] == pytest.approx(3 / 5)
    assert r["recall"] == pytest.approx(3 / 4)
    assert r["f1"] == pytest.approx(6 / 9)
    assert r["type_accuracy"] == pytest.approx(2 / 3)


def test_per_class_f1_uses_hovernet_weights(per_class_case):
    r = detection_f1(per_class_case, radius=12, n_classes=2)
    # class 1: TP 1, FP 0, FN 1 (GT 1 predicted 2), FP_d 1, FN_d 0
    # class 2: TP 1, FP 1, FN 0, FP_d 1, FN_d 1
    assert r["f1_per_class"] == pytest.approx([2 / (2 + 2 + 1), 2 / (2 + 2 + 1 + 1)])
    assert r["precision_per_class"] == pytest.approx([1 / (1 + 1), 1 / (1 + 2 + 1)])
    assert r["recall_per_class"] == pytest.approx([1 / (1 + 2), 1 / (1 + 1)])


def test_match_instances_give_each_pair_and_leftover_its_class(per_class_case):
    matched = match_instances(*per_class_case[0], radius=12, n_classes=2)
    # img1: GT (1, 1, 2) at (2,2), (2,20), (20,2); predictions (1, 2, 1) at (2,3), (2,21), (30,30)
    assert list(matched.paired_true) == [1, 1] and list(matched.paired_pred) == [1, 2]
    assert list(matched.unpaired_true) == [2] and list(matched.unpaired_pred) == [1]


def test_detection_from_pooled_matches_equals_detection_f1(per_class_case):
    pooled = pool_matches([match_instances(*image, radius=12, n_classes=2) for image in per_class_case])
    direct = detection_f1(per_class_case, radius=12, n_classes=2)
    r = detection_from_classes(*pooled, n_classes=2)
    assert (r["tp"], r["fp"], r["fn"]) == (direct["tp"], direct["fp"], direct["fn"]) == (3, 2, 1)
    assert r["f1_per_class"] == pytest.approx(direct["f1_per_class"])


def test_detection_from_no_matches_is_nan():
    r = detection_from_classes(*pool_matches([]), n_classes=1)
    assert (r["tp"], r["fp"], r["fn"]) == (0, 0, 0)
    assert np.isnan(r["f1"]) and np.isnan(r["type_accuracy"]) and np.isnan(r["f1_per_class"][0])


def test_detection_f1_of_empty_images_is_nan_not_a_dummy_match():
    empty = np.zeros((8, 8), np.int32)
    r = detection_f1([(empty, empty, empty, empty)], radius=12, n_classes=1)
    assert (r["tp"], r["fp"], r["fn"]) == (0, 0, 0)
    assert np.isnan(r["f1"]) and np.isnan(r["f1_per_class"][0])


def test_detection_f1_needs_class_maps_for_per_class_scores(dots):
    m = dots((8, 8), (1, 1, 1))
    with pytest.raises(ValueError, match="class maps"):
        detection_f1([(m, None, m, None)], radius=12, n_classes=1)
