"""Decoder variants in one pass and the no-encoder baseline: parsing, bit-identity, level use, run folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from embedstore.errors import EmbedstoreError
from embedstore.extract.pipeline import extract_into_store
from embedstore.store import open_store
from embedstore.trainer.fit.options import DataOptions, Optimisation
from embedstore.trainer.fit.train import train, train_variants
from embedstore.trainer.fit.variants import Variant, parse_levels, parse_variant, pick_levels, union_levels
from embedstore.trainer.model.checkpoint import load_decoder
from embedstore.trainer.targets.maps import compute_targets

TIMING = ("tiles_per_s", "seconds")


@pytest.fixture(scope="module")
def store_path(tiny_store) -> Path:
    """10 synthetic H&E tiles of 64 px (6 train, 2 val) with tiny-vit features (random weights)."""
    return tiny_store(10)


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(str(a)), load_file(str(b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


# --- parsing ---------------------------------------------------------------------------------------------
def test_levels_none_is_the_empty_level_set_and_bad_levels_are_refused() -> None:
    assert parse_levels("none") == () and parse_levels("NONE") == () and parse_levels("2,3") == (2, 3)
    for bad in ("3,2", "1,1", "4", "", "a"):
        with pytest.raises(EmbedstoreError, match="--levels"):
            parse_levels(bad)


def test_a_variant_names_its_levels_and_preset() -> None:
    assert parse_variant("levels=2,3") == Variant("lite-L23", "lite", (2, 3))
    assert parse_variant("levels=none:decoder=cisca") == Variant("cisca-none", "cisca", ())
    assert parse_variant("name=deep:levels=3", preset="cisca") == Variant("deep", "cisca", (3,))
    assert parse_variant("decoder=lite") == Variant("lite-L0123", "lite", (0, 1, 2, 3))
    for bad in ("levels", "levels=2:levels=3", "width=2", "levels=9", "decoder=huge", "name=a/b"):
        with pytest.raises(EmbedstoreError):
            parse_variant(bad)


def test_the_loader_reads_the_union_and_each_decoder_gets_its_own_levels() -> None:
    variants = [Variant("a", "lite", (3,)), Variant("b", "lite", (1, 3)), Variant("c", "lite", ())]
    assert union_levels(variants) == (1, 3)
    assert pick_levels((1, 3), ["l1", "l3"], (3,)) == ["l3"] and pick_levels((1, 3), ["l1", "l3"], ()) == []


# --- one pass ----------------------------------------------------------------------------------------------
def test_a_variant_trained_with_others_gets_the_weights_it_gets_alone(store_path: Path, tmp_path: Path) -> None:
    variants = [parse_variant(v) for v in ("levels=3", "levels=2,3", "levels=none")]
    common = dict(seeds=(0, 1), epochs=2, data=DataOptions(batch_size=2), show_progress=False)
    reports = train_variants(store_path, tmp_path / "together", variants, **common)
    assert [r.variant for r in reports] == ["lite-L3", "lite-L23", "lite-none"]
    for variant in variants:
        alone = train(store_path, tmp_path / variant.name, levels=variant.levels, **common)
        run = tmp_path / "together" / variant.name
        for seed in (0, 1):
            for which in ("best", "last"):
                assert _same_weights(run / f"seed_{seed}" / f"{which}.safetensors",
                                     alone.run_dir / f"seed_{seed}" / f"{which}.safetensors")
        assert _rows(run) == _rows(alone.run_dir)
        config = json.loads((run / "config.json").read_text())
        assert config["decoder"]["levels"] == list(variant.levels) and config["seeds"] == [0, 1]
        assert (run / "curves.png").is_file() and (run / "metrics.csv").is_file()
    assert {r.parameters for r in reports[:2]} != {reports[2].parameters}


def test_variants_resume_together(store_path: Path, tmp_path: Path) -> None:
    variants = [parse_variant("levels=3"), parse_variant("levels=none")]
    common = dict(data=DataOptions(batch_size=2), show_progress=False)
    train_variants(store_path, tmp_path / "full", variants, epochs=2, **common)
    train_variants(store_path, tmp_path / "half", variants, epochs=1, **common)
    train_variants(store_path, tmp_path / "half", variants, epochs=2, resume=True, **common)
    for v in variants:
        assert _same_weights(tmp_path / "full" / v.name / "seed_0" / "last.safetensors",
                             tmp_path / "half" / v.name / "seed_0" / "last.safetensors")
    with pytest.raises(EmbedstoreError, match="already holds a run"):
        train_variants(store_path, tmp_path / "full", variants, epochs=2, **common)


def test_variant_names_must_differ(store_path: Path, tmp_path: Path) -> None:
    with pytest.raises(EmbedstoreError, match="given twice"):
        train_variants(store_path, tmp_path, [parse_variant("levels=3"), parse_variant("levels=3")])


# --- the baseline reads no level array ---------------------------------------------------------------------
def test_the_baseline_trains_without_any_level_array_and_rebuilds_from_its_checkpoint(store_path: Path,
                                                                                      tmp_path: Path) -> None:
    bare = tmp_path / "bare.zarr"
    shutil.copytree(store_path, bare)
    key = open_store(bare).feature_keys()[0]
    for k in range(4):
        shutil.rmtree(bare / "features" / key / f"level_{k}")
    report = train(bare, tmp_path / "run", levels=(), epochs=2, data=DataOptions(batch_size=2),
                   show_progress=False)
    model = load_decoder(report.run_dir / "seed_0" / "best.safetensors")
    assert model.cfg.levels == () and len(model.branches) == 0
    assert json.loads((report.run_dir / "config.json").read_text())["encoder_key"] == key
    assert np.isfinite(report.seeds[0].best_val_loss)


# --- the fusion path uses the levels -----------------------------------------------------------------------
def _level_store(path: Path, informative: bool, blank: bool, noise: float = 0.05) -> Path:
    """40 synthetic 64 px tiles (24 train, 8 val) whose tiny-cnn levels (grids 16, 8, 4, 2) are replaced.

    Informative: channels 0-6 of every level are the tile's 3-class one-hot and 4 direction maps averaged
    over each grid cell, plus N(0, 0.1) noise, the other channels N(0, 1); random: N(0, 1) everywhere.
    ``blank`` sets every image to mid-grey, so the RGB stem sees nothing and only the levels can inform.
    """
    extract_into_store(path, "tiny-cnn", dataset="synthetic", options={"n": 40}, tile_size=64,
                       weights="random", device="cpu", show_progress=False)
    store = open_store(path, mode="a")
    group = store.features(store.feature_keys()[0])
    rng = np.random.default_rng(7)
    instance = np.asarray(store.group["labels/instance"][:])
    classes = np.asarray(store.group["labels/class"][:]) if "class" in store.group["labels"] else None
    maps = []
    for i in range(instance.shape[0]):
        t = compute_targets(instance[i], None if classes is None else classes[i], "40x")
        maps.append(np.concatenate([np.eye(3, dtype=np.float32)[t.contour].transpose(2, 0, 1), t.directions]))
    maps = np.stack(maps)  # (n, 7, S, S)
    for k in range(4):
        n, v, c, h, w = group[f"level_{k}"].shape
        values = rng.normal(0.0, 1.0, (n, v, c, h, w)).astype(np.float32)
        if informative:
            pooled = maps.reshape(n, 7, h, 64 // h, w, 64 // w).mean(axis=(3, 5))
            values[:, :, :7] = pooled[:, None] + rng.normal(0.0, noise, pooled[:, None].shape)
        group[f"level_{k}"][:] = values
    if blank:
        store.group["images"][:] = 128
    return path


def test_informative_levels_beat_the_no_encoder_baseline_and_random_ones_do_not_hurt(tmp_path: Path) -> None:
    """Blank images: whatever beats the baseline came through the level branches. 8 epochs of 12 steps."""
    common = dict(epochs=8, data=DataOptions(batch_size=2), optimisation=Optimisation(lr=2e-3), show_progress=False)
    fused, baseline = train_variants(_level_store(tmp_path / "info.zarr", True, blank=True), tmp_path / "info",
                                     [parse_variant("levels=0,1,2,3"), parse_variant("levels=none")], **common)
    (noise,) = train_variants(_level_store(tmp_path / "noise.zarr", False, blank=True), tmp_path / "noise",
                              [parse_variant("levels=0,1,2,3")], **common)
    fused, baseline, noise = fused.seeds[0], baseline.seeds[0], noise.seeds[0]
    # measured: val loss 0.47 (fused), 0.94 (baseline), 0.94 (random levels); 3-class accuracy 0.98 / 0.92 / 0.92
    assert fused.best_val_loss < 0.7 * baseline.best_val_loss
    assert fused.val_accuracy > baseline.val_accuracy + 0.03
    assert noise.best_val_loss < 1.05 * baseline.best_val_loss
    assert noise.val_direction_mae < baseline.val_direction_mae + 0.02


def test_a_baseline_run_evaluates_and_predicts_like_any_run(store_path: Path, tmp_path: Path) -> None:
    from PIL import Image

    from embedstore.trainer.evaluate.run import evaluate
    from embedstore.trainer.predict.images import predict

    report = train(store_path, tmp_path / "run", levels=(), epochs=1, data=DataOptions(batch_size=2),
                   show_progress=False)
    metrics = evaluate(report.run_dir, split="test", workers=1, device="cpu", show_progress=False)
    assert (report.run_dir / "eval_test" / "metrics.json").is_file() and metrics
    image = np.random.default_rng(0).integers(0, 255, (80, 100, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "new.png")
    (summary,) = predict(report.run_dir, tmp_path / "new.png", out=tmp_path / "out", device="cpu",
                         show_progress=False)
    assert summary.files["instances"].is_file()
