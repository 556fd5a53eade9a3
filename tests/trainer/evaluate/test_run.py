"""`evaluate`: metrics.json, per-tile and per-class tables, stitched images, min-size tuning, options and errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from embedstore.datasets.synthetic import render
from embedstore.errors import EmbedstoreError
from embedstore.imaging.tiling import relabel
from embedstore.extract.pipeline import extract_into_store
from embedstore.store import open_store
from embedstore.trainer.evaluate import evaluate, min_size_grid
from embedstore.trainer.fit.train import train
from embedstore.trainer.inference.maps import load_run, predict_maps, read_tiles
from embedstore.trainer.metrics import aggregated_jaccard_index, panoptic_quality
from embedstore.trainer.postprocess import PostprocessParams, instances_from_maps


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


# --- stitched images ---------------------------------------------------------------------------------


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
