"""Checked reads in training and evaluation, schema-1 stores, and one writer per store."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from embedstore.cli.app import main
from embedstore.errors import EmbedstoreError
from embedstore.extract.pipeline import extract_into_store
from embedstore.store import open_store
from embedstore.store.integrity import CorruptTileError, read_rows
from embedstore.store.lock import store_lock
from embedstore.store.verify import verify_store
from embedstore.trainer.data.loader import Loader


@pytest.fixture
def store_copy(synthetic_store: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy.zarr"
    shutil.copytree(synthetic_store, target)
    return target


def _feature_shard(store: Path, level: int = 0) -> Path:
    return next(p for p in (store / "features" / "tiny-vit" / f"level_{level}").rglob("*")
                if p.is_file() and "/c/" in p.as_posix())


def test_the_loader_refuses_a_deleted_feature_shard_instead_of_training_on_zeros(store_copy: Path) -> None:
    _feature_shard(store_copy, 2).unlink()
    loader = Loader(store_copy, "train", ram_cache="off", prefetch=0)
    with pytest.raises(CorruptTileError, match=r"features/tiny-vit/level_2: tiles? \d+ \(synthetic_he_"):
        next(iter(loader))


def test_the_cli_stops_training_on_non_finite_features_in_one_line(store_copy: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    store = open_store(store_copy)
    first_train = int(store.samples().indices("train")[0])
    array = zarr.open_array(store_copy / "features" / "tiny-vit" / "level_1", mode="r+")
    tile = np.asarray(array[first_train])
    tile[0, 0, 0, 0] = np.nan
    array[first_train] = tile
    code = main(["train", "--store", str(store_copy), "--epochs", "1", "--device", "cpu", "--quiet",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"level_1: tile {first_train} (" in err and "not finite" in err
    assert not (tmp_path / "run" / "seed_0" / "best.safetensors").exists()


def test_a_schema_1_store_still_opens_and_verify_says_it_has_no_checksums(store_copy: Path) -> None:
    group = zarr.open_group(store_copy, mode="r+")
    meta = dict(group.attrs["embedstore"])
    meta["schema_version"] = 1
    group.attrs["embedstore"] = meta
    report = verify_store(open_store(store_copy), show_progress=False)
    assert report.ok, report.problems
    assert any("schema 1" in note and "no checksums" in note for note in report.notes)


def test_a_zero_filled_committed_tile_counts_as_missing_where_the_fill_is_zero(tmp_path: Path) -> None:
    """Schema-1 feature arrays fill with 0: a committed all-zero tile is a chunk that is gone."""
    array = zarr.create_array(tmp_path / "a.zarr", shape=(4, 3), chunks=(1, 3), dtype="float16", fill_value=0)
    array[:] = np.arange(12, dtype=np.float16).reshape(4, 3) + 1
    array[2] = 0
    with pytest.raises(CorruptTileError, match="tile 2: committed"):
        read_rows(array, np.array([0, 1, 2, 3]), finite=True)
    assert read_rows(array, np.array([0, 1, 3]), finite=True).shape == (3, 3)  # tile 2 not asked for


def test_a_second_writer_of_a_store_is_refused_in_one_line(tmp_path: Path) -> None:
    location = tmp_path / "s.zarr"
    with store_lock(location):
        with pytest.raises(EmbedstoreError, match="another `embed extract`.*is writing this store"):
            extract_into_store(location, "tiny-vit", dataset="synthetic", options={"n": 4}, tile_size=64,
                               weights="random", device="cpu", show_progress=False)
    assert not location.exists()  # the refused run wrote nothing
    extract_into_store(location, "tiny-vit", dataset="synthetic", options={"n": 4}, tile_size=64,
                       weights="random", device="cpu", show_progress=False)
    assert verify_store(open_store(location), show_progress=False).ok
