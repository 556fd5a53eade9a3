"""Maps from a run: the run folder read through RunDir, TileMaps planes, and MapBlender on the one blender."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from embedstore.encoders import get_spec
from embedstore.errors import EmbedstoreError
from embedstore.trainer.inference.maps import MapBlender, TileMaps, background_fill, load_run, map_channels
from embedstore.trainer.model.checkpoint import save_weights
from embedstore.trainer.model.decoder import DecoderConfig, DecoderWidths, build_decoder
from embedstore.trainer.run_folder import RunConfig, RunDir

TINY = DecoderWidths(scale=(4, 4, 8, 8, 8, 8), stem=(4, 4), features=4, type_features=4, heads=(4, 4, 4),
                     head_blocks=1, stage_convs=1, step_convs=0)


def make_run(folder: Path, seeds: tuple[int, ...] = (0, 1), n_types: int = 2) -> Path:
    """A run folder as `train` writes it: config.json and an untrained tiny decoder per seed."""
    spec = get_spec("tiny-vit")
    cfg = DecoderConfig(preset="lite", level_dims=spec.dims, level_grids=spec.grids, n_types=n_types, widths=TINY)
    for seed in seeds:
        torch.manual_seed(seed)
        RunDir(folder).seed_dir(seed).mkdir(parents=True)
        save_weights(RunDir(folder).checkpoint(seed), build_decoder(cfg), {"decoder": cfg.to_dict(), "seed": seed})
    RunDir(folder).write_config(RunConfig(store="s.zarr", encoder_key=spec.key, encoder_fingerprint="random:0",
                                          decoder=cfg.to_dict(), seeds=list(seeds), split_val="holdout"))
    return folder


def tile_maps(value: float, n_types: int, size: int = 2) -> TileMaps:
    types = np.full((n_types + 1, size, size), value, np.float32) if n_types else None
    return TileMaps(np.full((3, size, size), value, np.float32), np.full((4, size, size), value, np.float32), types)


# ----------------------------------------------------------------------------------------------- run folder


def test_load_run_reads_the_config_and_every_seed(tmp_path: Path) -> None:
    loaded = load_run(make_run(tmp_path / "run"), device="cpu")
    assert loaded.seeds == (0, 1) and len(loaded.models) == 2
    assert loaded.run == RunDir(tmp_path / "run")
    assert loaded.run_config.split_val == "holdout" and loaded.encoder_key == "tiny-vit"
    assert loaded.store_location == "s.zarr" and loaded.n_types == 2
    # the dict view serves callers that look keys up by name


def test_load_run_refuses_a_missing_folder_config_seed_or_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(EmbedstoreError, match="no such run folder"):
        load_run(tmp_path / "nowhere")
    with pytest.raises(EmbedstoreError, match="config.json"):
        load_run(tmp_path)
    run = make_run(tmp_path / "run", seeds=(0, 1))
    with pytest.raises(EmbedstoreError, match=r"seeds \[4\]"):
        load_run(run, seeds=(4,))
    RunDir(run).checkpoint(1).unlink()
    with pytest.raises(EmbedstoreError, match="seed_1"):
        load_run(run)


# ----------------------------------------------------------------------------------------------- planes


@pytest.mark.parametrize("n_types", [0, 3])
def test_planes_stack_contour_directions_types_and_come_back(n_types: int) -> None:
    rng = np.random.default_rng(0)
    types = rng.random((n_types + 1, 5, 6), dtype=np.float32) if n_types else None
    maps = TileMaps(rng.random((3, 5, 6), dtype=np.float32), rng.random((4, 5, 6), dtype=np.float32), types)
    planes = maps.planes()
    assert planes.shape == (map_channels(n_types), 5, 6)
    back = TileMaps.from_planes(planes)
    np.testing.assert_array_equal(back.contour, maps.contour)
    np.testing.assert_array_equal(back.directions, maps.directions)
    assert (back.types is None) == (types is None)
    if types is not None:
        np.testing.assert_array_equal(back.types, types)


def test_background_fill_is_background_probability_one_zero_directions_background_class() -> None:
    np.testing.assert_array_equal(background_fill(0), [0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(background_fill(2), [0, 0, 1, 0, 0, 0, 0, 1, 0, 0])


# ----------------------------------------------------------------------------------------------- MapBlender


def test_map_blender_averages_type_maps_and_fills_uncovered_pixels_with_background_class() -> None:
    blender = MapBlender((3, 4), 2)
    blender.add(tile_maps(0.2, 2), (0, 0))
    blender.add(tile_maps(0.6, 2), (0, 1))
    out = blender.result()
    assert out.types is not None and out.types.shape == (3, 3, 4)
    np.testing.assert_allclose(out.types[1, 0], [0.2, 0.4, 0.6, 0.0])
    np.testing.assert_allclose(out.types[:, 2, 0], [1.0, 0.0, 0.0])  # row 2: no tile
    np.testing.assert_allclose(out.contour[:, 2, 3], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(out.directions[:, 2, 3], 0.0)


def test_map_blender_spline_window_keeps_constant_maps_constant() -> None:
    blender = MapBlender((20, 20), 0, window="spline")
    for y in (-4, 4, 12):
        for x in (-4, 4, 12):
            blender.add(tile_maps(0.25, 0, size=12), (y, x))
    out = blender.result()
    np.testing.assert_allclose(out.contour, 0.25, atol=1e-6)
    np.testing.assert_allclose(out.directions, 0.25, atol=1e-6)


def test_map_blender_with_types_refuses_a_tile_without_them() -> None:
    with pytest.raises(ValueError, match="type maps"):
        MapBlender((4, 4), 2).add(tile_maps(0.5, 0), (0, 0))
