"""pack_store / unpack_store: a faithful, deterministic zip; unsafe or foreign zips refused."""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

import pytest
import zarr

from embedstore.errors import EmbedstoreError
from embedstore.share.pack import pack_store, unpack_store
from embedstore.store import open_store
from embedstore.store.digest import compute_manifest
from embedstore.store.verify import verify_store


def _one_line(err: pytest.ExceptionInfo[EmbedstoreError]) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_pack_then_unpack_gives_identical_arrays(small_store: Path, tmp_path: Path, assert_same_arrays) -> None:
    packed = pack_store(small_store, tmp_path / "small.zip", progress=False)
    unpacked = unpack_store(packed, tmp_path / "back.zarr")
    assert_same_arrays(str(small_store), str(unpacked))
    assert_same_arrays(str(small_store), zarr.storage.ZipStore(packed, mode="r", read_only=True))


def test_packed_zip_stores_every_file_uncompressed_under_its_key(small_store: Path, tmp_path: Path) -> None:
    packed = pack_store(small_store, tmp_path / "small.zip", progress=False)
    files = sorted(p.relative_to(small_store).as_posix() for p in small_store.rglob("*") if p.is_file())
    with zipfile.ZipFile(packed) as zf:
        assert [info.filename for info in zf.infolist()] == files
        assert {info.compress_type for info in zf.infolist()} == {zipfile.ZIP_STORED}
        assert zf.read("zarr.json") == (small_store / "zarr.json").read_bytes()
    assert not (tmp_path / "small.zip.partial").exists()


def test_packing_includes_the_manifests_and_keeps_the_digest(small_store: Path, tmp_path: Path) -> None:
    packed = pack_store(small_store, tmp_path / "a.zip", progress=False)
    with zipfile.ZipFile(packed) as zf:
        names = set(zf.namelist())
    assert {"manifest/zarr.json", "features/tiny-vit/manifest/zarr.json"} <= names
    assert compute_manifest(packed)["digest"] == compute_manifest(small_store)["digest"]
    assert verify_store(open_store(packed), show_progress=False).ok


def test_packing_twice_gives_the_same_bytes(small_store: Path, tmp_path: Path) -> None:
    first = pack_store(small_store, tmp_path / "one.zip", progress=False).read_bytes()
    second = pack_store(small_store, tmp_path / "two.zip", progress=False).read_bytes()
    assert first == second


def test_a_packed_store_opens_as_a_store(small_store: Path, tmp_path: Path) -> None:
    packed = pack_store(small_store, tmp_path / "small.zip", progress=False)
    store = open_store(packed)
    assert store.n_samples == 8 and store.feature_keys() == ["tiny-vit"]


def test_pack_refuses_an_existing_output_and_a_folder_that_is_not_a_store(small_store: Path,
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "x.zip"
    out.write_bytes(b"keep me")
    with pytest.raises(EmbedstoreError) as err:
        pack_store(small_store, out, progress=False)
    assert "already exists" in _one_line(err)
    assert out.read_bytes() == b"keep me"
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbedstoreError) as err:
        pack_store(tmp_path / "empty", tmp_path / "y.zip", progress=False)
    assert "not a store folder" in _one_line(err)


def test_a_failed_pack_leaves_neither_the_zip_nor_a_partial(small_store: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_open = zipfile.ZipFile.open

    def failing_open(self: zipfile.ZipFile, *args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # stands in for a kill in the middle of the zip
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", failing_open)
    with pytest.raises(KeyboardInterrupt):
        pack_store(small_store, tmp_path / "out.zip", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _zip_with(path: Path, entries: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize("entry", ["../escape.txt", "/abs/path.txt", "images/../../escape.txt",
                                   "C:/windows.txt", "images\\..\\escape.txt"])
def test_unpack_refuses_zip_slip_entries(small_store: Path, tmp_path: Path, entry: str) -> None:
    root = (small_store / "zarr.json").read_bytes()
    bad = _zip_with(tmp_path / "bad.zip", {"zarr.json": root, entry: b"x"})
    with pytest.raises(EmbedstoreError) as err:
        unpack_store(bad, tmp_path / "out.zarr")
    assert "unsafe zip entry" in _one_line(err)
    assert not (tmp_path / "out.zarr").exists() and not (tmp_path.parent / "escape.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.zip"]


def test_unpack_refuses_symlink_entries(small_store: Path, tmp_path: Path) -> None:
    root = (small_store / "zarr.json").read_bytes()
    bad = _zip_with(tmp_path / "bad.zip", {"zarr.json": root}, symlink="images/link")
    with pytest.raises(EmbedstoreError) as err:
        unpack_store(bad, tmp_path / "out.zarr")
    assert "symbolic link" in _one_line(err)
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize("entries, reason", [
    ({"data.txt": b"hello"}, "no zarr.json at the zip's root"),
    ({"store.zarr/zarr.json": b"{}"}, "no zarr.json at the zip's root"),
    ({"zarr.json": b'{"zarr_format": 3, "node_type": "group", "attributes": {}}'}, "not an embedstore store"),
    ({"zarr.json": b"\x00\x01 not json"}, "not valid JSON"),
])
def test_unpack_refuses_a_zip_that_is_not_a_store(tmp_path: Path, entries: dict[str, bytes], reason: str) -> None:
    with pytest.raises(EmbedstoreError) as err:
        unpack_store(_zip_with(tmp_path / "foreign.zip", entries), tmp_path / "out.zarr")
    assert reason in _one_line(err)
    assert not (tmp_path / "out.zarr").exists()


def test_unpack_refuses_a_store_of_a_newer_schema_naming_both_versions(small_store: Path, tmp_path: Path) -> None:
    document = json.loads((small_store / "zarr.json").read_text())
    document["attributes"]["embedstore"]["schema_version"] = 99
    bad = _zip_with(tmp_path / "newer.zip", {"zarr.json": json.dumps(document).encode()})
    with pytest.raises(EmbedstoreError) as err:
        unpack_store(bad, tmp_path / "out.zarr")
    assert "schema version 99" in _one_line(err)


def test_unpack_refuses_a_truncated_zip_and_a_non_empty_target(small_store: Path, tmp_path: Path) -> None:
    packed = pack_store(small_store, tmp_path / "small.zip", progress=False)
    cut = tmp_path / "cut.zip"
    cut.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    with pytest.raises(EmbedstoreError) as err:
        unpack_store(cut, tmp_path / "out.zarr")
    assert "not a readable zip" in _one_line(err)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(EmbedstoreError) as err:
        unpack_store(packed, tmp_path / "busy")
    assert "not empty" in _one_line(err)


def test_unpack_reports_a_corrupt_entry_and_leaves_nothing(small_store: Path, tmp_path: Path) -> None:
    packed = pack_store(small_store, tmp_path / "small.zip", progress=False)
    data = bytearray(packed.read_bytes())
    with zipfile.ZipFile(packed) as zf:
        info = zf.getinfo("images/c/0/0/0/0")
    data[info.header_offset + 30 + len(info.filename) + 10] ^= 0xFF  # a byte inside the entry's data
    flipped = tmp_path / "flipped.zip"
    flipped.write_bytes(bytes(data))
    with pytest.raises(EmbedstoreError) as err:
        unpack_store(flipped, tmp_path / "out.zarr")
    assert "images/c/0/0/0/0" in _one_line(err) and "corrupt" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flipped.zip", "small.zip"]
