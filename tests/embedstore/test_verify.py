"""verify finds every kind of damage, by array and sample id; readers refuse damaged tiles in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from embedstore.store.digest import compute_manifest, read_manifests
from embedstore.store.integrity import CorruptTileError, read_tiles_checked
from embedstore.extract.pipeline import extract_into_store
from embedstore.store import SCHEMA_VERSION, open_store
from embedstore.store.verify import verify_store


@pytest.fixture(scope="module")
def pristine(tiny_store) -> Path:
    """32 synthetic 64 px tiles (two 16-tile shards) with tiny-vit features, schema 2, manifests written."""
    return tiny_store(32)


@pytest.fixture
def store_copy(pristine: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy.zarr"
    shutil.copytree(pristine, target)
    return target


def _shard(store: Path, array: str, index: int) -> Path:
    """The shard file of tiles [16 index, 16 index + 16) of a tile-major array."""
    files = sorted(p for p in (store / array / "c" / str(index)).rglob("*") if p.is_file())
    assert len(files) == 1, files
    return files[0]


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def _problems(store: Path) -> list[str]:
    report = verify_store(open_store(store), show_progress=False)
    assert not report.ok
    return report.problems


def test_a_fresh_store_is_schema_2_with_manifests_and_verifies_clean(pristine: Path) -> None:
    store = open_store(pristine)
    assert store.meta["schema_version"] == SCHEMA_VERSION == 2
    assert set(read_manifests(store.group)) == {"", "features/tiny-vit"}
    report = verify_store(store, show_progress=False)
    assert report.ok, report.problems
    assert report.tiles_checked == 32 and report.groups == {"tiny-vit": (32, 32)}
    assert report.digest == compute_manifest(pristine)["digest"]


@pytest.mark.parametrize("array", ["images", "labels/instance", "features/tiny-vit/level_0",
                                   "features/tiny-vit/level_3"])
@pytest.mark.parametrize("where", [0.1, 0.5, 0.9, -3])  # chunk bytes ... the shard index at the end
def test_a_single_flipped_byte_is_found_and_named(store_copy: Path, array: str, where: float) -> None:
    shard = _shard(store_copy, array, 1)
    size = shard.stat().st_size
    _flip(shard, int(where * size) if where > 0 else size + int(where))
    problems = _problems(store_copy)
    assert any(p.startswith(array) and "tiles 16-31" in p for p in problems), problems  # the manifest names it
    assert any(p.startswith(array) and "not decode" in p for p in problems), problems  # the checksum too


def test_a_flipped_byte_is_refused_by_a_reader_naming_the_tile(store_copy: Path) -> None:
    shard = _shard(store_copy, "features/tiny-vit/level_0", 0)
    _flip(shard, 40)
    array = open_store(store_copy).group["features/tiny-vit/level_0"]
    ids = [str(s) for s in open_store(store_copy).samples().id]
    with pytest.raises(CorruptTileError, match=r"features/tiny-vit/level_0: tile 0 \(") as err:
        read_tiles_checked(array, slice(0, 16), sample_ids=ids, finite=True)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("keep", [0, 0.5])
def test_a_truncated_shard_is_found(store_copy: Path, keep: float) -> None:
    shard = _shard(store_copy, "features/tiny-vit/level_1", 0)
    shard.write_bytes(shard.read_bytes()[: int(keep * shard.stat().st_size)])
    problems = _problems(store_copy)
    assert any(p.startswith("features/tiny-vit/level_1: tiles 0 (") for p in problems), problems


@pytest.mark.parametrize("array", ["images", "features/tiny-vit/level_2"])
def test_a_deleted_shard_is_found(store_copy: Path, array: str) -> None:
    _shard(store_copy, array, 0).unlink()
    problems = _problems(store_copy)
    assert any(p.startswith(f"{array} tiles 0-15") and "is missing" in p for p in problems), problems


def test_a_deleted_feature_shard_is_refused_when_read_even_without_a_manifest(store_copy: Path) -> None:
    _shard(store_copy, "features/tiny-vit/level_2", 1).unlink()
    shutil.rmtree(store_copy / "features" / "tiny-vit" / "manifest")
    array = open_store(store_copy).group["features/tiny-vit/level_2"]
    with pytest.raises(CorruptTileError, match="tiles 16, 17, .* missing or not finite"):
        read_tiles_checked(array, slice(16, 32), finite=True)
    problems = _problems(store_copy)
    assert any("level_2: tiles 16 (synthetic_he_0016), 17" in p for p in problems), problems


def test_two_swapped_chunk_files_are_found(store_copy: Path) -> None:
    a, b = _shard(store_copy, "features/tiny-vit/level_0", 0), _shard(store_copy, "features/tiny-vit/level_0", 1)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    problems = _problems(store_copy)
    assert sum("features/tiny-vit/level_0 tiles" in p and "differs" in p for p in problems) == 2, problems


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_features_are_found_by_sample_id(store_copy: Path, value: float) -> None:
    array = zarr.open_array(store_copy / "features" / "tiny-vit" / "level_1", mode="r+")
    block = np.asarray(array[16:32])
    block[3, 0, 0, 0, 0] = value
    array[16:32] = block
    sample = str(open_store(store_copy).samples().id[19])
    problems = _problems(store_copy)
    assert any(f"level_1: tile 19 ({sample})" in p and "not finite" in p for p in problems), problems


def test_expect_compares_the_store_digest(pristine: Path) -> None:
    good = compute_manifest(pristine)["digest"]
    assert verify_store(open_store(pristine), expect=good, show_progress=False).ok
    report = verify_store(open_store(pristine), expect="sha256:" + "0" * 64, show_progress=False)
    assert any("differs from the expected" in p for p in report.problems)


def test_the_digest_identifies_the_content_not_the_copy(pristine: Path, tmp_path: Path) -> None:
    """A second extraction of the same data with the same weights gives the same digest."""
    again = tmp_path / "again.zarr"
    extract_into_store(again, "tiny-vit", dataset="synthetic", options={"n": 32}, tile_size=64, weights="random",
                       device="cpu", show_progress=False)
    first, second = compute_manifest(pristine), compute_manifest(again)
    assert first["digest"] == second["digest"]
    assert first["groups"]["features/tiny-vit"] == second["groups"]["features/tiny-vit"]


def test_a_scope_manifest_holds_exactly_that_scope_of_the_whole_store(pristine: Path) -> None:
    from embedstore.store.digest import file_hashes, scope_of

    every = file_hashes(pristine)
    for scope in ("", "features/tiny-vit"):
        manifest = compute_manifest(pristine, scope)
        assert manifest["files"] == {k: h for k, h in every.items() if scope_of(k) == scope}
        assert manifest["files"]


def test_every_array_of_a_fresh_store_checksums_its_chunks(pristine: Path) -> None:
    """Markers and the sample table too: a flipped byte anywhere is refused, not only in pixels and features."""
    group = zarr.open_group(pristine, mode="r")
    arrays = dict(group.arrays()) | {p: a for p, a in group.members(max_depth=None) if isinstance(a, zarr.Array)}
    assert {"features/tiny-vit/done", "samples/ingested", "samples/id", "images"} <= set(arrays)
    for path, array in arrays.items():
        codecs = [type(c).__name__ for c in array.metadata.codecs]
        inner = [type(c).__name__ for c in getattr(array.metadata.codecs[0], "codecs", ())]
        assert "Crc32cCodec" in codecs + inner, (path, codecs, inner)
