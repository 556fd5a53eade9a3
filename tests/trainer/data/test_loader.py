"""The streaming loader: batch layout, committed tiles only, read-only stores, views, RAM cache on/off."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from embedstore.imaging.dihedral import dihedral
from embedstore.errors import EmbedstoreError
from embedstore.extract.pipeline import extract_into_store
from embedstore.store import open_store
from embedstore.trainer.data.loader import Loader
from embedstore.trainer.targets.maps import compute_targets

TILE = 64


def _store(path: Path, n: int, views: int = 1) -> Path:
    """Synthetic H&E tiles of 64 px with tiny-vit features (random weights): 60/20/20 train/val/test."""
    extract_into_store(path, "tiny-vit", dataset="synthetic", options={"n": n}, tile_size=TILE,
                       weights="random", device="cpu", views=views, show_progress=False)
    return path


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 tiles in 3 shards of 16: 24 train tiles spread over every shard."""
    return _store(tmp_path_factory.mktemp("loader") / "s.zarr", 40)


@pytest.fixture(scope="module")
def views_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _store(tmp_path_factory.mktemp("loader") / "v8.zarr", 10, views=8)


def _batches(loader: Loader, epoch: int) -> list:
    return list(loader.epoch(epoch))


def test_batches_hold_levels_image_and_targets_with_the_documented_shapes_and_dtypes(store_path: Path) -> None:
    loader = Loader(store_path, "train", batch_size=5, ram_cache="off")
    batches = _batches(loader, 0)
    assert loader.n_tiles == 24 and len(loader) == 5 and [len(b) for b in batches] == [5, 5, 5, 5, 4]
    b = batches[0]
    assert [tuple(x.shape) for x in b.levels] == [(5, 64, 4, 4)] * 4
    assert all(x.dtype == torch.float32 for x in b.levels)
    assert b.image.shape == (5, 3, TILE, TILE) and b.image.dtype == torch.float32
    assert 0.0 <= float(b.image.min()) and float(b.image.max()) <= 1.0
    assert b.contour.shape == (5, TILE, TILE) and b.contour.dtype == torch.int64
    assert set(b.contour.unique().tolist()) <= {0, 1, 2}
    assert b.directions.shape == (5, 4, TILE, TILE) and b.directions.dtype == torch.float32
    assert b.weight.shape == (5, TILE, TILE) and b.weight.dtype == torch.float32
    assert b.types is not None and b.types.shape == (5, TILE, TILE) and b.types.dtype == torch.int64
    assert sorted(np.concatenate([x.tiles for x in batches]).tolist()) == loader.tiles.tolist()


def test_a_batch_equals_the_stored_arrays_and_the_targets_of_its_labels(store_path: Path) -> None:
    store = open_store(store_path)
    batch = next(Loader(store_path, "val", batch_size=3, shuffle=False, ram_cache="off").epoch(0))
    group = store.features("tiny-vit")
    for row, tile in enumerate(batch.tiles):
        np.testing.assert_array_equal(batch.levels[2][row].numpy(), group["level_2"][tile, 0].astype(np.float32))
        np.testing.assert_array_equal(batch.image[row].permute(1, 2, 0).numpy() * 255,
                                      store.array("images")[tile].astype(np.float32))
        expected = compute_targets(store.array("labels/instance")[tile], store.array("labels/class")[tile], "40x")
        np.testing.assert_array_equal(batch.contour[row].numpy(), expected.contour)
        np.testing.assert_array_equal(batch.directions[row].numpy(), expected.directions)
        np.testing.assert_array_equal(batch.weight[row].numpy(), expected.weight)
        np.testing.assert_array_equal(batch.types[row].numpy(), expected.types)



@pytest.mark.parametrize("ram_cache", ["on", "off"])
def test_no_levels_reads_images_and_targets_without_any_level_array(store_path: Path, tmp_path: Path,
                                                                   ram_cache: str) -> None:
    full = next(Loader(store_path, "train", shuffle=False, ram_cache="off").epoch(0))
    bare = tmp_path / "bare.zarr"
    shutil.copytree(store_path, bare)
    key = open_store(bare).feature_keys()[0]
    for k in range(4):
        shutil.rmtree(bare / "features" / key / f"level_{k}")
    loader = Loader(bare, "train", levels=(), shuffle=False, ram_cache=ram_cache)
    batch = next(loader.epoch(0))
    assert batch.levels == [] and loader.n_tiles == 24
    assert torch.equal(batch.image, full.image) and torch.equal(batch.directions, full.directions)
    assert np.array_equal(batch.tiles, full.tiles)

def test_a_level_subset_reads_only_the_requested_levels(store_path: Path) -> None:
    full = next(Loader(store_path, "train", shuffle=False, ram_cache="off").epoch(0))
    subset = next(Loader(store_path, "train", levels=(1, 3), shuffle=False, ram_cache="off").epoch(0))
    assert len(subset.levels) == 2
    torch.testing.assert_close(subset.levels[0], full.levels[1], rtol=0, atol=0)
    torch.testing.assert_close(subset.levels[1], full.levels[3], rtol=0, atol=0)


def test_the_order_depends_on_seed_and_epoch_only(store_path: Path) -> None:
    a = Loader(store_path, "train", seed=3, ram_cache="off")
    b = Loader(store_path, "train", seed=3, ram_cache="on", readers=1, prefetch=1)
    order = a.plan(0)[0]
    np.testing.assert_array_equal(order, b.plan(0)[0])
    assert sorted(order.tolist()) == a.tiles.tolist()
    assert not np.array_equal(order, a.plan(1)[0])
    assert not np.array_equal(order, Loader(store_path, "train", seed=4, ram_cache="off").plan(0)[0])


def test_resuming_an_epoch_at_a_batch_gives_the_remaining_batches(store_path: Path) -> None:
    loader = Loader(store_path, "train", batch_size=4, ram_cache="off")
    whole = [b.tiles for b in loader.epoch(2)]
    rest = [b.tiles for b in loader.epoch(2, start_batch=4)]
    assert len(rest) == 2
    for a, b in zip(whole[4:], rest):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_ram_cache_on_and_off_give_identical_batches(views_store: Path, prefetch: int) -> None:
    on = Loader(views_store, "train", batch_size=2, ram_cache="on", seed=1)
    off = Loader(views_store, "train", batch_size=2, ram_cache="off", seed=1, prefetch=prefetch, window_blocks=1)
    assert on.ram and not off.ram
    for epoch in (0, 1):
        for a, b in zip(_batches(on, epoch), _batches(off, epoch), strict=True):
            np.testing.assert_array_equal(a.tiles, b.tiles)
            np.testing.assert_array_equal(a.views, b.views)
            for name in ("image", "contour", "directions", "weight", "types"):
                assert torch.equal(getattr(a, name), getattr(b, name)), name
            assert all(torch.equal(x, y) for x, y in zip(a.levels, b.levels))


def test_auto_ram_cache_follows_the_memory_budget(store_path: Path) -> None:
    assert Loader(store_path, "val", ram_cache="auto", memory_fraction=0.5).ram
    assert not Loader(store_path, "val", ram_cache="auto", memory_fraction=1e-12).ram


def test_eight_view_batches_pair_each_cached_view_with_its_transformed_image_and_targets(views_store: Path) -> None:
    store = open_store(views_store)
    group = store.features("tiny-vit")
    loader = Loader(views_store, "train", batch_size=3, ram_cache="off", seed=0)
    assert loader.augment
    seen = set()
    for epoch in range(6):
        for batch in loader.epoch(epoch):
            for row, (tile, t) in enumerate(zip(batch.tiles, batch.views)):
                seen.add(int(t))
                image = dihedral(store.array("images")[tile], t)
                np.testing.assert_array_equal(batch.image[row].permute(1, 2, 0).numpy() * 255, image.astype(np.float32))
                np.testing.assert_array_equal(batch.levels[0][row].numpy(),
                                              group["level_0"][tile, t].astype(np.float32))
                expected = compute_targets(dihedral(store.array("labels/instance")[tile], t),
                                           dihedral(store.array("labels/class")[tile], t), "40x")
                np.testing.assert_array_equal(batch.contour[row].numpy(), expected.contour)
                np.testing.assert_array_equal(batch.directions[row].numpy(), expected.directions)
                np.testing.assert_array_equal(batch.weight[row].numpy(), expected.weight)
                np.testing.assert_array_equal(batch.types[row].numpy(), expected.types)
    assert seen == set(range(8))


def test_validation_batches_use_view_zero(views_store: Path) -> None:
    loader = Loader(views_store, "train", augment=False, ram_cache="off")
    assert all((b.views == 0).all() for b in loader.epoch(0))


def _partial_copy(src: Path, dst: Path, uncommitted: list[tuple[int, int]]) -> Path:
    shutil.copytree(src, dst)
    done = zarr.open_array(dst / "features" / "tiny-vit" / "done", mode="r+")
    for tile, view in uncommitted:
        done[tile, view] = False
    return dst


def test_only_committed_tiles_are_used_and_the_missing_ones_are_counted(store_path: Path, tmp_path: Path) -> None:
    train = open_store(store_path).samples().indices("train")
    dropped = [int(train[0]), int(train[7]), int(train[-1])]
    copy = _partial_copy(store_path, tmp_path / "partial.zarr", [(t, 0) for t in dropped])
    loader = Loader(copy, "train", ram_cache="off")
    assert loader.n_missing == 3 and loader.n_tiles == train.size - 3
    used = np.concatenate([b.tiles for b in loader.epoch(0)])
    assert sorted(used.tolist()) == sorted(set(train.tolist()) - set(dropped))


def test_a_tile_missing_one_view_is_not_committed(views_store: Path, tmp_path: Path) -> None:
    train = open_store(views_store).samples().indices("train")
    copy = _partial_copy(views_store, tmp_path / "partial.zarr", [(int(train[1]), 5)])
    assert Loader(copy, "train", ram_cache="off").n_missing == 1


def test_require_complete_refuses_a_partial_feature_group(store_path: Path, tmp_path: Path) -> None:
    train = open_store(store_path).samples().indices("train")
    copy = _partial_copy(store_path, tmp_path / "partial.zarr", [(int(train[2]), 0)])
    with pytest.raises(EmbedstoreError, match="1 of 24 'train' tiles"):
        Loader(copy, "train", require_complete=True)


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_a_read_only_copy_of_the_store_loads_and_is_left_unchanged(store_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ro.zarr"
    shutil.copytree(store_path, copy)
    before = _tree_digest(copy)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        for ram in ("on", "off"):
            assert sum(len(b) for b in Loader(copy, "train", ram_cache=ram).epoch(0)) == 24
        assert _tree_digest(copy) == before
        assert not any(p.name.endswith((".tmp", ".lock")) for p in copy.rglob("*"))
    finally:
        for path in [copy, *copy.rglob("*")]:
            os.chmod(path, path.stat().st_mode | stat.S_IWUSR)


def test_bad_inputs_raise_one_line_errors(store_path: Path, tmp_path: Path) -> None:
    with pytest.raises(EmbedstoreError, match="no features for encoder 'uni'"):
        Loader(store_path, "train", encoder_key="uni")
    with pytest.raises(EmbedstoreError, match="split 'holdout' has no tiles"):
        Loader(store_path, "holdout")
    unlabelled = tmp_path / "unlabelled.zarr"
    shutil.copytree(store_path, unlabelled)
    shutil.rmtree(unlabelled / "labels" / "instance")
    with pytest.raises(EmbedstoreError, match="no labels"):
        Loader(unlabelled, "train")
