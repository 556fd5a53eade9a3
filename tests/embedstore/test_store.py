"""The store: schema, ingest once, resume, refusal of mismatched stores, read-only sharing."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import fsspec
import numpy as np
import pytest

from embedstore.datasets import get_dataset
from embedstore.errors import EmbedstoreError
from embedstore.store import SCHEMA_VERSION, ingest, open_store, store_bytes


def test_ingest_writes_every_tile_label_and_sample_row(tmp_path: Path) -> None:
    ds = get_dataset("synthetic", n=20)
    store = ingest(ds, tmp_path / "s.zarr", tiles_per_shard=8, show_progress=False)
    assert store.n_samples == 20 and store.ingest_complete
    assert [b.stop - b.start for b in store.blocks()] == [8, 8, 4]
    samples = store.samples()
    for i in (0, 7, 8, 19):
        tile = ds.tile(i)
        np.testing.assert_array_equal(store.array("images")[i], tile.image)
        np.testing.assert_array_equal(store.array("labels/instance")[i], tile.instance)
        if tile.cls is not None:
            np.testing.assert_array_equal(store.array("labels/class")[i], tile.cls)
        assert samples.id[i] == tile.sample_id and samples.split[i] == tile.split
        assert tuple(samples.origin[i]) == tuple(tile.origin)
    assert sorted(set(samples.split)) <= ["test", "train", "val"]


def test_reingest_of_the_same_dataset_is_a_noop(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    ingest(get_dataset("synthetic", n=8), path, show_progress=False)
    before = {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}
    ingest(get_dataset("synthetic", n=8), path, show_progress=False)
    after = {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}
    assert before == after


def test_ingest_refuses_a_store_of_another_dataset(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    ingest(get_dataset("synthetic", n=8), path, show_progress=False)
    with pytest.raises(EmbedstoreError, match="s.zarr"):
        ingest(get_dataset("synthetic", n=9), path, show_progress=False)


def test_interrupted_ingest_resumes_only_missing_blocks(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    ds = get_dataset("synthetic", n=24)
    store = ingest(ds, path, tiles_per_shard=8, show_progress=False)
    # simulate a kill after block 0: unset the markers of blocks 1-2 and the completion flag, scribble block 2
    store.group["samples/ingested"][1:] = False
    store.group["images"][16:24] = 0
    meta = dict(store.group.attrs["embedstore"])
    meta["ingest_complete"] = False
    store.group.attrs["embedstore"] = meta
    block0 = {p: p.stat().st_mtime_ns for p in (path / "images" / "c" / "0").rglob("*") if p.is_file()}
    assert block0
    resumed = ingest(ds, path, tiles_per_shard=8, show_progress=False)
    assert resumed.ingest_complete
    np.testing.assert_array_equal(resumed.array("images")[16:24], np.stack([ds.tile(i).image for i in range(16, 24)]))
    assert block0 == {p: p.stat().st_mtime_ns for p in (path / "images" / "c" / "0").rglob("*") if p.is_file()}


def test_open_refuses_other_schema_versions_naming_both(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    store = ingest(get_dataset("synthetic", n=4), path, show_progress=False)
    meta = dict(store.group.attrs["embedstore"])
    meta["schema_version"] = SCHEMA_VERSION + 1
    store.group.attrs["embedstore"] = meta
    with pytest.raises(EmbedstoreError, match=f"version {SCHEMA_VERSION + 1}.*version {SCHEMA_VERSION}"):
        open_store(path)


def test_open_missing_or_foreign_store_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(EmbedstoreError, match="no such store"):
        open_store(tmp_path / "nope.zarr")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    with pytest.raises(EmbedstoreError, match="not an embedstore store"):
        open_store(tmp_path / "plain")


def test_shared_store_is_read_only_and_reads_from_a_zip(tmp_path: Path, synthetic_store: Path) -> None:
    store = open_store(synthetic_store)
    assert store.read_only
    with pytest.raises(Exception):
        store.group["images"][0] = 0
    zpath = tmp_path / "shared.zip"
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_STORED) as zf:
        for p in sorted(synthetic_store.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(synthetic_store).as_posix())
    zipped = open_store(zpath)
    np.testing.assert_array_equal(zipped.array("images")[3], store.array("images")[3])
    np.testing.assert_array_equal(zipped.features("tiny-vit")["level_2"][5], store.features("tiny-vit")["level_2"][5])


def test_store_bytes_counts_every_file_of_a_folder_and_the_size_of_a_zip(tmp_path: Path, synthetic_store: Path) -> None:
    files = [p for p in synthetic_store.rglob("*") if p.is_file()]
    assert store_bytes(synthetic_store) == sum(p.stat().st_size for p in files) > 0
    images = synthetic_store / "images"
    assert store_bytes(images) == sum(p.stat().st_size for p in images.rglob("*") if p.is_file())
    zpath = tmp_path / "shared.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in files:
            zf.write(p, p.relative_to(synthetic_store).as_posix())
    assert store_bytes(zpath) == zpath.stat().st_size
    assert store_bytes(tmp_path / "absent") == store_bytes(tmp_path / "absent.zip") == 0


def test_store_bytes_of_a_remote_store_walks_its_filesystem() -> None:
    memory = fsspec.filesystem("memory")
    memory.pipe("/remote.zarr/zarr.json", b"{}")
    memory.pipe("/remote.zarr/features/a/c/0", b"x" * 1000)
    try:
        assert store_bytes("memory://remote.zarr") == 1002
        assert store_bytes("memory://remote.zarr/features/a") == 1000
    finally:
        memory.rm("/remote.zarr", recursive=True)
