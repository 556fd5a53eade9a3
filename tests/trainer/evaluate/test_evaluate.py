"""`evaluate`: metrics.json, per-tile and per-class tables, stitched images, oracle maps, min-size tuning."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from embedstore.datasets import get_dataset
from embedstore.datasets.synthetic import render
from embedstore.imaging.tiling import grid_origins, relabel
from embedstore.errors import EmbedstoreError
from embedstore.pipeline import extract_into_store
from embedstore.store import open_store
from embedstore.trainer.bench.evaluate import bench_evaluate
from embedstore.trainer.evaluate.run import (
    ImageScore,
    evaluate,
    mean_sd,
    min_size_grid,
    score_image,
    score_maps,
    stitch_labels,
    summarize,
)
from embedstore.trainer.inference.maps import MapBlender, TileMaps, load_run, predict_maps, read_tiles
from embedstore.trainer.metrics.instance_metrics import (
    aggregate_pannuke,
    aggregated_jaccard_index,
    conic_mpq_plus,
    detection_f1,
    pannuke_pq,
    panoptic_quality,
)
from embedstore.trainer.postprocess import PostprocessParams, classify_instances, instances_from_maps
from embedstore.trainer.targets.oracle import oracle_maps, realistic_maps
from embedstore.trainer.fit.train import train


def _trained_run(folder: Path, options: dict) -> Path:
    """Synthetic H&E tiles of 64 px with tiny-vit features and a 1-epoch, 2-seed lite run on them."""
    store = folder / "s.zarr"
    extract_into_store(store, "tiny-vit", dataset="synthetic", options=options, tile_size=64, weights="random",
                       device="cpu", show_progress=False)
    train(store, seeds=(0, 1), epochs=1, device="cpu", out=folder / "run", show_progress=False)
    return folder / "run"


@pytest.fixture(scope="module")
def tile_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 one-tile images (test split: tiles 4 and 9)."""
    return _trained_run(tmp_path_factory.mktemp("tile_run"), {"n": 10})


@pytest.fixture(scope="module")
def tile_report(tile_run: Path) -> dict:
    return evaluate(tile_run, workers=1, device="cpu", show_progress=False)


@pytest.fixture(scope="module")
def stitched_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 images of 128 px, each cut into 2 x 2 tiles of 64 px (test split: image 4)."""
    return _trained_run(tmp_path_factory.mktemp("stitched_run"), {"n": 5, "image_size": 128})


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- outputs of a tile-level evaluation ----------------------------------------------------------------


def test_metrics_json_holds_every_seed_and_their_mean_and_sd(tile_run: Path, tile_report: dict) -> None:
    saved = json.loads((tile_run / "eval_test" / "metrics.json").read_text())
    assert saved["seeds"] == [0, 1] and saved["split"] == "test" and saved["n_tiles"] == 2
    assert set(saved["tile"]["per_seed"]) == {"0", "1"}
    for key in ("bpq", "aji", "det_f1", "mpq_plus", "mpq_image", "mpq_group", "r2", "pq_plus.Epithelial"):
        values = [tile_report["tile"]["per_seed"][s][key] for s in ("0", "1")]
        assert tile_report["tile"]["mean"][key] == pytest.approx(np.mean(values))
        assert tile_report["tile"]["sd"][key] == pytest.approx(np.std(values, ddof=1))
    assert saved["postprocess"]["variant"] == "cisca"
    assert saved["postprocess"]["params"]["min_size"] == PostprocessParams.for_dataset("40x").min_size
    assert set(saved["protocols"]) >= {"binary", "detection", "pannuke", "conic", "counts"}
    assert "image" not in saved  # one tile per image: nothing to stitch


def test_tiles_csv_has_one_row_per_test_tile(tile_run: Path, tile_report: dict) -> None:
    samples = open_store(tile_run.parent / "s.zarr").samples()
    rows = _rows(tile_run / "eval_test" / "tiles.csv")
    assert [r["id"] for r in rows] == list(samples.id[samples.indices("test")])
    assert {"pq", "pq_seed0", "pq_seed1", "aji", "mpq"} <= set(rows[0])


def test_classes_csv_has_one_row_per_class(tile_run: Path, tile_report: dict) -> None:
    rows = _rows(tile_run / "eval_test" / "classes.csv")
    assert [r["class"] for r in rows] == ["Epithelial", "Inflammatory", "Connective"]
    assert float(rows[0]["pq_plus"]) == pytest.approx(tile_report["tile"]["mean"]["pq_plus.Epithelial"])


def test_tile_metrics_equal_a_direct_recomputation(tile_run: Path, tile_report: dict) -> None:
    store = open_store(tile_run.parent / "s.zarr")
    tile = int(store.samples().indices("test")[1])
    loaded = load_run(tile_run, device="cpu")
    feats, images = read_tiles(store, loaded.encoder_key, loaded.levels, np.array([tile]))
    maps = predict_maps(loaded.models, feats, images)[1][0]  # seed 1
    pred = instances_from_maps(maps.contour, maps.directions, PostprocessParams.for_dataset("40x"))
    true = np.asarray(store.group["labels/instance"][tile])
    row = _rows(tile_run / "eval_test" / "tiles.csv")[1]
    assert float(row["pq_seed1"]) == pytest.approx(panoptic_quality(true, pred)["pq"])
    assert float(row["aji_seed1"]) == pytest.approx(aggregated_jaccard_index(true, pred))
    assert int(row["n_pred_seed1"]) == len(np.setdiff1d(np.unique(pred), [0]))


# --- set-level reduction -----------------------------------------------------------------------------


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


def test_pooled_metrics_equal_the_metric_functions_on_the_whole_set(scored_pairs: tuple) -> None:
    pairs, scores = scored_pairs
    summary = summarize(scores, ["a", "a", "b", "b", "b", "c"], ["Epithelial", "Inflammatory", "Connective"])
    conic = conic_mpq_plus(pairs, 3)
    assert summary["mpq_plus"] == pytest.approx(conic["mpq_plus"])
    assert summary["pq_plus.Inflammatory"] == pytest.approx(conic["pq_plus"][1])
    detection = detection_f1(pairs, 12.0, n_classes=3)
    assert summary["det_f1"] == pytest.approx(detection["f1"])
    assert summary["type_accuracy"] == pytest.approx(detection["type_accuracy"])
    for c, name in enumerate(["Epithelial", "Inflammatory", "Connective"]):
        assert summary[f"f1.{name}"] == pytest.approx(detection["f1_per_class"][c], nan_ok=True)
    pannuke = aggregate_pannuke([pannuke_pq(*p, 3) for p in pairs], ["a", "a", "b", "b", "b", "c"])
    assert summary["mpq_image"] == pytest.approx(pannuke["image_mean"]["mpq"])
    assert summary["mpq_group"] == pytest.approx(pannuke["tissue_mean"]["mpq"])
    assert summary["bpq"] == pytest.approx(np.mean([panoptic_quality(p[0], p[2])["pq"] for p in pairs]))


def test_score_image_matches_pannuke_pq_per_class(scored_pairs: tuple) -> None:
    pairs, scores = scored_pairs
    for pair, score in zip(pairs, scores):
        expected = pannuke_pq(*pair, 3)
        np.testing.assert_allclose(score.pannuke["pq"], expected["pq"])
        assert score.pannuke["mpq"] == pytest.approx(expected["mpq"], nan_ok=True)


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


# --- oracle maps on real tiles -----------------------------------------------------------------------


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


# --- stitched images ---------------------------------------------------------------------------------


@pytest.mark.parametrize("image_size, tile_size", [(160, 64), (256, 64)])
def test_stitched_ground_truth_equals_the_source_labels(image_size: int, tile_size: int) -> None:
    """Overlapping (160 = 64 + 64 + 32) and seam-only (256 = 4 x 64) tilings of synthetic images."""
    data = get_dataset("synthetic", None, tile_size=tile_size, n=2, image_size=image_size)
    tiles = [data.tile(i) for i in range(len(data))]
    for index in (0, 1):
        mine = [t for t in tiles if t.source == f"synthetic_he_{index:04d}"]
        inst, cls = stitch_labels([t.instance for t in mine], [t.origin for t in mine], mine[0].source_shape,
                                  [t.cls for t in mine])
        _, true_inst, true_cls = render("he", 0, index, image_size)
        np.testing.assert_array_equal(inst, relabel(true_inst))
        np.testing.assert_array_equal(cls, true_cls)


def test_stitching_rejoins_cells_cut_by_a_seam_but_not_cells_known_to_differ() -> None:
    image = np.zeros((7, 8), np.int32)
    image[1:3, 2:6] = 1  # crosses the seam at x = 4
    image[3:5, 1:5] = 2  # crosses it in rows 3-4 ...
    image[5, 1:4] = 2
    image[3:5, 5:7] = 3  # ... and touches cell 3 on the right, which meets cell 2 across the seam in row 5
    image[5, 4:7] = 3
    left, right = relabel(image[:, :4]), relabel(image[:, 4:])
    inst, _ = stitch_labels([left, right], [(0, 0), (0, 4)], (7, 8))
    np.testing.assert_array_equal(inst, relabel(image))


def test_blender_averages_overlapping_tiles_and_marks_uncovered_pixels_background() -> None:
    ones = TileMaps(np.full((3, 2, 2), 0.2, np.float32), np.ones((4, 2, 2), np.float32), None)
    threes = TileMaps(np.full((3, 2, 2), 0.4, np.float32), np.full((4, 2, 2), 3.0, np.float32), None)
    blender = MapBlender((3, 4), 0)
    blender.add(ones, (0, 0))
    blender.add(threes, (0, 1))
    out = blender.result()
    np.testing.assert_allclose(out.directions[0, 0], [1.0, 2.0, 3.0, 0.0])
    np.testing.assert_allclose(out.contour[:, 2, 0], [0.0, 0.0, 1.0])  # row 2 is covered by no tile


def test_stitched_evaluation_reports_tiles_and_whole_images(stitched_run: Path) -> None:
    report = evaluate(stitched_run, workers=1, device="cpu", show_progress=False)
    assert report["n_tiles"] == 4
    assert report["tile"]["mean"]["n_images"] == 4 and report["image"]["mean"]["n_images"] == 1
    assert report["image"]["sources"] == ["synthetic_he_0004"]
    _, source_inst, _ = render("he", 0, 4, 128)
    assert report["image"]["mean"]["n_true"] == relabel(source_inst).max()
    rows = _rows(stitched_run / "eval_test" / "images.csv")
    assert [(r["source"], r["tiles"]) for r in rows] == [("synthetic_he_0004", "4")]
    assert _rows(stitched_run / "eval_test" / "classes.csv")[0]["level"] == "image"


# --- options and errors ------------------------------------------------------------------------------


def test_tune_min_size_picks_a_value_from_the_validation_grid(tile_run: Path) -> None:
    report = evaluate(tile_run, tune_min_size=True, seeds=(0,), workers=1, device="cpu", show_progress=False)
    tuning = report["min_size_tuning"]
    assert tuning["split"] == "val" and tuning["grid"] == list(min_size_grid("40x"))
    assert set(tuning["scores"]) == {str(v) for v in tuning["grid"]}
    best = max(tuning["grid"], key=lambda v: tuning["scores"][str(v)] if tuning["scores"][str(v)] is not None
               else -np.inf)
    assert tuning["chosen"] == best == report["postprocess"]["params"]["min_size"]
    assert report["postprocess"]["min_size_from"] == "tuned"


@pytest.mark.slow
def test_a_process_pool_gives_the_same_metrics_as_one_process(tile_run: Path, tile_report: dict,
                                                              tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(tile_run, copy)
    pooled = evaluate(copy, workers=2, device="cpu", show_progress=False)
    for seed, metrics in tile_report["tile"]["per_seed"].items():
        assert pooled["tile"]["per_seed"][seed] == pytest.approx(metrics, nan_ok=True)


def test_missing_run_checkpoint_split_and_bad_options_are_user_errors(tile_run: Path, tmp_path: Path) -> None:
    with pytest.raises(EmbedstoreError, match="no such run"):
        evaluate(tmp_path / "nowhere", workers=1, show_progress=False)
    copy = tmp_path / "run"
    shutil.copytree(tile_run, copy)
    (copy / "seed_1" / "best.safetensors").unlink()
    with pytest.raises(EmbedstoreError, match="missing checkpoint of seed 1"):
        evaluate(copy, workers=1, device="cpu", show_progress=False)
    with pytest.raises(EmbedstoreError, match="split 'holdout' has no tiles"):
        evaluate(tile_run, split="holdout", seeds=(0,), workers=1, device="cpu", show_progress=False)
    with pytest.raises(EmbedstoreError, match="--postprocess"):
        evaluate(tile_run, postprocess="fancy", workers=1, show_progress=False)
    with pytest.raises(EmbedstoreError, match="seeds"):
        evaluate(tile_run, seeds=(7,), workers=1, device="cpu", show_progress=False)


def test_bench_evaluate_gives_the_same_scores_in_a_process_pool() -> None:
    alone = bench_evaluate(6, workers=1, distinct=3)
    pooled = bench_evaluate(6, workers=2, distinct=3)
    assert alone["n_tiles"] == pooled["n_tiles"] == 6 and pooled["seconds"] > 0
    assert pooled["bpq"] == alone["bpq"]
    assert 0.5 < alone["bpq"] <= 1.0  # model-like maps of synthetic tiles segment most cells
