"""`embed predict`: the per-image exports, whole images end to end, choices and errors.

Tiling and window blending are tested with the planner and blender in tests/embedstore/imaging/test_tiling.py.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import typer
from PIL import Image
from scipy import ndimage as ndi
from typer.testing import CliRunner

from embedstore.cli.predict_cmd import predict_command
from embedstore.encoders import get_spec
from embedstore.errors import EmbedstoreError
from embedstore.trainer.model.checkpoint import save_weights
from embedstore.trainer.model.decoder import DecoderConfig, DecoderWidths, build_decoder
from embedstore.trainer.predict.export import Cell, cell_records, geojson_features, instance_polygons, overlay
from embedstore.trainer.predict.images import check_tiling, predict, predict_image_maps
from embedstore.trainer.predict.run_model import choose_seed, load_run_model

CONSEP_CLASSES = ("Other", "Inflammatory", "Epithelial", "Spindle")
# A decoder a few channels wide: same code path as the presets, a fraction of their CPU time.
TINY = DecoderWidths(scale=(4, 4, 8, 8, 8, 8), stem=(4, 4), features=4, type_features=4, heads=(4, 4, 4),
                     head_blocks=1, stage_convs=1, step_convs=0)


def make_run(folder: Path, classes: tuple[str, ...], *, seeds: dict[int, float] | None = None,
             fingerprint: str = "random:0") -> Path:
    """A run folder as `train` writes it, with tiny-vit features and untrained tiny decoders.

    ``seeds`` maps each seed to the validation loss recorded in its best checkpoint.
    """
    spec = get_spec("tiny-vit")
    cfg = DecoderConfig(preset="lite", level_dims=spec.dims, level_grids=spec.grids, n_types=len(classes),
                        widths=TINY)
    seeds = seeds or {0: 1.0}
    for seed, val_loss in seeds.items():
        torch.manual_seed(seed)
        (folder / f"seed_{seed}").mkdir(parents=True)
        save_weights(folder / f"seed_{seed}" / "best.safetensors", build_decoder(cfg),
                     {"decoder": cfg.to_dict(), "epoch": 0, "seed": seed, "val_loss": val_loss})
    config = {"store": "unused.zarr", "encoder_key": spec.key, "encoder": spec.to_dict(),
              "encoder_fingerprint": fingerprint, "decoder": cfg.to_dict(), "seeds": list(seeds),
              "dataset": {"name": "consep" if classes else "monuseg", "magnification": "40x", "um_per_px": 0.25,
                          "classes": list(classes)}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# ----------------------------------------------------------------------------------------------
# exports


def test_polygon_of_a_square_runs_between_pixel_centres_in_corner_coordinates() -> None:
    labels = np.zeros((10, 12), np.int32)
    labels[2:6, 3:7] = 5  # rows 2..5, columns 3..6: corners x in [3, 7], y in [2, 6]
    ring = np.array(instance_polygons(labels)[5])
    assert np.array_equal(ring[0], ring[-1])
    x, y = ring[:, 0], ring[:, 1]
    assert (x.min(), x.max(), y.min(), y.max()) == (3.0, 7.0, 2.0, 6.0)
    area = 0.5 * (np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))
    assert area == pytest.approx(16 - 4 * 0.125)  # the 4x4 square minus four half-pixel corner triangles


def test_polygon_of_a_split_instance_outlines_its_larger_piece() -> None:
    labels = np.zeros((10, 20), np.int32)
    labels[1:3, 1:3] = 1
    labels[4:9, 10:16] = 1  # 30 pixels, corners x in [10, 16], y in [4, 9]
    ring = np.array(instance_polygons(labels)[1])
    assert (ring[:, 0].min(), ring[:, 0].max(), ring[:, 1].min(), ring[:, 1].max()) == (10, 16, 4, 9)


def test_polygon_ignores_holes() -> None:
    labels = np.zeros((9, 9), np.int32)
    labels[1:8, 1:8] = 2
    labels[4, 4] = 0
    (ring,) = [np.array(r) for r in instance_polygons(labels).values()]
    x, y = ring[:, 0], ring[:, 1]
    assert 0.5 * (np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])) == pytest.approx(49 - 0.5)


def test_cell_records_give_area_centroid_and_class() -> None:
    labels = np.zeros((6, 6), np.int32)
    labels[0:2, 0:3] = 3
    labels[5, 5] = 7
    cells = cell_records(labels, {3: (2, 0.8), 7: (1, 0.55)}, ("A", "B"))
    assert cells == [Cell(3, 2, "B", 0.5, 1.0, 6, 0.8), Cell(7, 1, "A", 5.0, 5.0, 1, 0.55)]


def test_geojson_features_are_qupath_cells_with_classification() -> None:
    labels = np.zeros((8, 8), np.int32)
    labels[1:4, 1:4] = 1
    labels[5:7, 4:8] = 2
    cells = cell_records(labels, {1: (1, 0.9), 2: (2, 0.7)}, ("Tumor", "Stroma"))
    collection = geojson_features(labels, cells, "img")
    assert collection["type"] == "FeatureCollection"
    first, second = collection["features"]
    assert first["properties"]["objectType"] == "cell"
    assert first["nucleusGeometry"] == first["geometry"]
    assert first["properties"]["classification"] == {"name": "Tumor", "color": [230, 25, 75]}
    assert second["properties"]["measurements"]["Instance id"] == 2
    assert first["id"] != second["id"] and first["id"] == geojson_features(labels, cells, "img")["features"][0]["id"]
    detection = geojson_features(labels, cells, "img", object_type="detection")["features"][0]
    assert detection["properties"]["objectType"] == "detection" and "nucleusGeometry" not in detection


def test_overlay_paints_inner_boundaries_in_class_colours() -> None:
    image = np.full((7, 7, 3), 100, np.uint8)
    labels = np.zeros((7, 7), np.int32)
    labels[1:6, 1:6] = 4
    painted = overlay(image, labels, [Cell(4, 2, "B", 3.0, 3.0, 25, 1.0)])
    edge = np.zeros((7, 7), bool)
    edge[1:6, 1:6] = True
    edge[2:5, 2:5] = False
    assert np.all(painted[edge] == (60, 180, 75))
    assert np.all(painted[~edge] == 100)


# ----------------------------------------------------------------------------------------------
# whole images


@pytest.fixture(scope="module")
def consep_prediction(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """One 1000x1000 CoNSeP test image predicted with a 4-class tiny run.

    Tiles do not overlap here (stride 256, 16 tiles) to keep the default test run short; the blending of
    overlapping tiles is checked exactly above and end to end with the default stride in the slow tests.
    """
    root = tmp_path_factory.mktemp("predict")
    run = make_run(root / "run", CONSEP_CLASSES)
    image = real_data / "consep" / "Test" / "Images" / "test_2.png"
    summaries = predict(run, image, out=root / "out", stride=256, device="cpu", show_progress=False)
    return root / "out", summaries


def test_predict_writes_four_files_per_image(consep_prediction: tuple[Path, list]) -> None:
    out, summaries = consep_prediction
    assert sorted(p.name for p in out.iterdir()) == [
        "test_2_cells.csv", "test_2_cells.geojson", "test_2_instances.tif", "test_2_overlay.png"]
    assert summaries[0].n_tiles == 16 and summaries[0].shape == (1000, 1000)


def test_predict_label_tiff_has_the_image_size(consep_prediction: tuple[Path, list]) -> None:
    out, summaries = consep_prediction
    labels = tifffile.imread(out / "test_2_instances.tif")
    assert labels.shape == (1000, 1000) and labels.dtype == np.int32
    assert summaries[0].n_cells == len(np.unique(labels[labels > 0])) > 0


def test_predict_csv_has_one_row_per_instance(consep_prediction: tuple[Path, list]) -> None:
    out, _ = consep_prediction
    labels = tifffile.imread(out / "test_2_instances.tif")
    with open(out / "test_2_cells.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["id", "class", "class_name", "centroid_y", "centroid_x", "area", "class_probability"]
    area = np.bincount(labels.ravel())
    assert [int(r["id"]) for r in rows] == list(np.flatnonzero(area)[1:])
    assert all(int(r["area"]) == area[int(r["id"])] for r in rows)
    assert all(r["class_name"] == CONSEP_CLASSES[int(r["class"]) - 1] for r in rows)
    assert all(0.0 <= float(r["class_probability"]) <= 1.0 for r in rows)


def test_predict_geojson_is_valid_and_matches_the_labels(consep_prediction: tuple[Path, list]) -> None:
    out, _ = consep_prediction
    labels = tifffile.imread(out / "test_2_instances.tif")
    collection = json.loads((out / "test_2_cells.geojson").read_text())
    assert collection["type"] == "FeatureCollection"
    boxes = ndi.find_objects(labels)
    ids = []
    for feature in collection["features"]:
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        (ring,) = feature["geometry"]["coordinates"]
        assert len(ring) >= 4 and ring[0] == ring[-1]
        props = feature["properties"]
        assert props["objectType"] == "cell"
        assert props["classification"]["name"] in CONSEP_CLASSES and len(props["classification"]["color"]) == 3
        ident = props["measurements"]["Instance id"]
        ids.append(ident)
        # the ring outlines the instance's largest 4-connected piece: same extent in pixel-corner coordinates
        box = boxes[ident - 1]
        pieces, _ = ndi.label(labels[box] == ident)
        rows, cols = np.nonzero(pieces == np.argmax(np.bincount(pieces.ravel())[1:]) + 1)
        rows, cols = rows + box[0].start, cols + box[1].start
        xs, ys = np.array(ring).T
        assert (xs.min(), xs.max(), ys.min(), ys.max()) == (cols.min(), cols.max() + 1, rows.min(), rows.max() + 1)
    assert ids == list(np.unique(labels[labels > 0]))


def test_predict_overlay_png_has_the_image_size(consep_prediction: tuple[Path, list], real_data: Path) -> None:
    out, _ = consep_prediction
    with Image.open(out / "test_2_overlay.png") as im:
        assert im.size == (1000, 1000) and im.mode == "RGB"
        painted = np.asarray(im)
    original = np.asarray(Image.open(real_data / "consep" / "Test" / "Images" / "test_2.png").convert("RGB"))
    changed = np.any(painted != original, axis=2)
    labels = tifffile.imread(out / "test_2_instances.tif")
    assert changed.any() and np.all(labels[changed] > 0)  # only cell outlines are painted


def test_untyped_run_gives_every_cell_one_class(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", ())
    image = tmp_path / "noise.tif"
    tifffile.imwrite(image, np.random.default_rng(3).integers(0, 255, (150, 260, 3), dtype=np.uint8))
    (summary,) = predict(run, image, out=tmp_path / "out", device="cpu", show_progress=False)
    assert tifffile.imread(summary.files["instances"]).shape == (150, 260)
    with open(summary.files["cells"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == summary.n_cells == summary.class_counts["Cell"] > 0
    assert {r["class_name"] for r in rows} == {"Cell"}


@pytest.mark.slow
def test_predict_a_monuseg_tif_with_overlapping_tiles(real_data: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", ())
    image = sorted((real_data / "monuseg").glob("*.tif"))[0]
    (summary,) = predict(run, image, out=tmp_path / "out", device="cpu", show_progress=False)
    labels = tifffile.imread(summary.files["instances"])
    assert labels.shape == (1000, 1000) and summary.n_tiles == 64
    with open(summary.files["cells"], newline="") as fh:
        assert sum(1 for _ in csv.DictReader(fh)) == summary.n_cells == len(np.unique(labels[labels > 0]))
    with Image.open(summary.files["overlay"]) as im:
        assert im.size == (1000, 1000)


# ----------------------------------------------------------------------------------------------
# choices and errors


def test_tile_and_stride_are_checked_before_any_image_is_read(tmp_path: Path) -> None:
    with pytest.raises(EmbedstoreError, match="stride"):
        check_tiling(256, 300)
    run = make_run(tmp_path / "run", ())
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    with pytest.raises(EmbedstoreError, match="--stride 300"):
        predict(run, image, out=tmp_path / "out", stride=300, device="cpu", show_progress=False)


def test_an_image_of_one_tile_gets_the_model_maps_of_that_tile(tmp_path: Path) -> None:
    model = load_run_model(make_run(tmp_path / "run", CONSEP_CLASSES), device="cpu")
    image = np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    maps = predict_image_maps(model, image, tile=64, stride=64)
    expected = model(image[None])[0]  # CPU kernels round differently on another buffer: compare to 1e-4
    assert model.channels == expected.shape[0] == 3 + 4 + len(CONSEP_CLASSES) + 1
    np.testing.assert_allclose(maps.contour, expected[:3], atol=1e-4)
    np.testing.assert_allclose(maps.directions, expected[3:7], atol=1e-4)
    np.testing.assert_allclose(maps.types, expected[7:], atol=1e-4)


@pytest.mark.parametrize("option", ["--postprocess", "--object-type"])
def test_cli_refuses_a_bad_choice_in_one_line_and_lists_the_choices_in_help(
        option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from embedstore.cli.app import main

    assert main(["predict", str(tmp_path / "a.png"), "--run", str(tmp_path), option, "bogus"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and option in err[0] and "bogus" in err[0]
    result = CliRunner().invoke(_predict_app(), ["--help"], env={"COLUMNS": "200"})
    choices = {"--postprocess": "cisca|improved|nocut", "--object-type": "cell|detection"}[option]
    assert choices in result.output


def _predict_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(predict_command)
    return app


def test_default_seed_is_the_one_with_the_lowest_validation_loss(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", (), seeds={0: 0.9, 3: 0.4, 5: 0.6})
    assert choose_seed(run) == 3
    assert choose_seed(run, 5) == 5
    with pytest.raises(EmbedstoreError, match="--seed 1"):
        choose_seed(run, 1)


def test_run_without_checkpoints_is_refused(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", ())
    shutil.rmtree(run / "seed_0")
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    with pytest.raises(EmbedstoreError, match="best.safetensors"):
        predict(run, image, out=tmp_path / "out", device="cpu", show_progress=False)


def test_folder_without_a_run_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    with pytest.raises(EmbedstoreError, match="config.json"):
        predict(tmp_path, image, out=tmp_path / "out", device="cpu", show_progress=False)


def test_missing_and_unreadable_images_are_refused(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", ())
    with pytest.raises(EmbedstoreError, match="no such image"):
        predict(run, tmp_path / "missing.png", out=tmp_path / "out", device="cpu", show_progress=False)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(EmbedstoreError, match="broken.png"):
        predict(run, broken, out=tmp_path / "out", device="cpu", show_progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EmbedstoreError, match="no images"):
        predict(run, empty, out=tmp_path / "out", device="cpu", show_progress=False)


def test_encoder_weights_must_match_the_run_fingerprint(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", (), fingerprint="sha256:" + "0" * 64)
    image = tmp_path / "small.png"
    Image.fromarray(np.full((40, 50, 3), 200, np.uint8)).save(image)
    with pytest.raises(EmbedstoreError, match="fingerprint"):
        predict(run, image, out=tmp_path / "out", weights="random", device="cpu", show_progress=False)
    with pytest.warns(UserWarning, match="random:0"):
        (summary,) = predict(run, image, out=tmp_path / "out", weights="random", allow_fingerprint_mismatch=True,
                             device="cpu", show_progress=False)
    assert tifffile.imread(summary.files["instances"]).shape == (40, 50)


@pytest.mark.parametrize("weights", [None, "random"])
def test_random_encoder_weights_are_seeded_as_the_run_recorded(tmp_path: Path, weights: str | None) -> None:
    run = make_run(tmp_path / "run", (), fingerprint="random:7")  # seed 0 would give "random:0" and fail
    image = tmp_path / "small.png"
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(image)
    (summary,) = predict(run, image, out=tmp_path / "out", weights=weights, device="cpu", show_progress=False)
    assert summary.shape == (40, 50)


def test_cli_predicts_a_folder_and_prints_a_table(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", CONSEP_CLASSES)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for name in ("b.png", "a.jpg"):
        Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(images / name)
    result = CliRunner().invoke(_predict_app(), [str(images), "--run", str(run), "--out", str(tmp_path / "out"),
                                      "--device", "cpu", "--quiet"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "a.jpg" in result.output and "b.png" in result.output and "Epithelial" in result.output
    assert len(list((tmp_path / "out").iterdir())) == 8


@pytest.mark.slow
def test_predict_with_a_trained_run(synthetic_store: Path, real_data: Path, tmp_path: Path) -> None:
    from embedstore.trainer.fit.train import train

    train(synthetic_store, epochs=1, out=tmp_path / "run", show_progress=False)
    image = real_data / "consep" / "Test" / "Images" / "test_7.png"
    (summary,) = predict(tmp_path / "run", image, out=tmp_path / "out", device="cpu", show_progress=False)
    labels = tifffile.imread(summary.files["instances"])
    assert labels.shape == (1000, 1000)
    with open(summary.files["cells"], newline="") as fh:
        assert sum(1 for _ in csv.DictReader(fh)) == summary.n_cells == len(np.unique(labels[labels > 0]))
    features = json.loads(summary.files["geojson"].read_text())["features"]
    assert len(features) == summary.n_cells
    assert set(summary.class_counts) == {"Epithelial", "Inflammatory", "Connective"}
