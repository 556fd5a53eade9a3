"""open_remote over a loopback HTTP server: same arrays, second read from the cache, one-line errors."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
import zarr

from embedstore.errors import EmbedstoreError
from embedstore.share.cache import FOOTER
from embedstore.share.pack import pack_store
from embedstore.share.remote import RemoteZip, open_remote


def _serve(static_server, small_store: Path) -> str:
    shutil.copytree(small_store, static_server.root / "small.zarr")
    return f"{static_server.url}/small.zarr"


def _chunk_paths(small_store: Path) -> list[str]:
    return sorted(f"/small.zarr/{p.relative_to(small_store).as_posix()}"
                  for p in small_store.rglob("*") if p.is_file() and "/c/" in p.as_posix())


def _one_line(err: pytest.ExceptionInfo[EmbedstoreError]) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_served_folder_reads_the_same_arrays_and_the_second_read_is_local(
        static_server, small_store: Path, tmp_path: Path, assert_same_arrays) -> None:
    url = _serve(static_server, small_store)
    first = open_remote(url, cache_dir=tmp_path / "cache")
    assert_same_arrays(str(small_store), first)
    assert {path: static_server.requests[path] for path in _chunk_paths(small_store)} == \
        dict.fromkeys(_chunk_paths(small_store), 1)
    second = open_remote(url, cache_dir=tmp_path / "cache")
    assert_same_arrays(str(small_store), second)
    assert {path: static_server.requests[path] for path in _chunk_paths(small_store)} == \
        dict.fromkeys(_chunk_paths(small_store), 1)
    assert first.fetches == len(_chunk_paths(small_store)) and second.fetches == 0


def test_a_served_zip_is_downloaded_once_and_reads_the_same_arrays(
        static_server, small_store: Path, tmp_path: Path, assert_same_arrays) -> None:
    pack_store(small_store, static_server.root / "small.zip", progress=False)
    url = f"{static_server.url}/small.zip"
    first = open_remote(url, cache_dir=tmp_path / "cache")
    assert isinstance(first, RemoteZip)
    assert_same_arrays(str(small_store), first)
    second = open_remote(url, cache_dir=tmp_path / "cache")
    assert_same_arrays(str(small_store), second)
    assert static_server.requests["/small.zip"] == 1 and second.fetches == 0


def test_a_missing_store_is_a_one_line_error(static_server, tmp_path: Path) -> None:
    with pytest.raises(EmbedstoreError) as err:
        open_remote(f"{static_server.url}/nothing.zarr", cache_dir=tmp_path / "cache")
    assert "no store there" in _one_line(err) and "127.0.0.1" in str(err.value)
    with pytest.raises(EmbedstoreError) as err:
        open_remote(f"{static_server.url}/nothing.zip", cache_dir=tmp_path / "cache")
    assert "not found (404)" in _one_line(err)
    assert not any((tmp_path / "cache").rglob("*.zip*"))


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("name", ["store.zarr", "store.zip"])
def test_a_refused_connection_is_a_one_line_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(EmbedstoreError) as err:
        open_remote(f"http://127.0.0.1:{_closed_port()}/{name}", cache_dir=tmp_path / "cache")
    assert "cannot connect" in _one_line(err)


def test_a_truncated_chunk_download_is_an_error_and_is_not_cached(
        static_server, small_store: Path, tmp_path: Path) -> None:
    url = _serve(static_server, small_store)
    static_server.truncate.add("/small.zarr/images/c/0/0/0/0")
    group = zarr.open_group(store=open_remote(url, cache_dir=tmp_path / "cache"), mode="r")
    with pytest.raises(EmbedstoreError) as err:
        group["images"][0]
    assert "download truncated" in _one_line(err) and "images/c/0/0/0/0" in str(err.value)
    assert not list((tmp_path / "cache").rglob("images/c/**/*"))
    static_server.truncate.clear()
    assert (group["images"][0] == zarr.open_group(str(small_store), mode="r")["images"][0]).all()


def test_a_truncated_zip_download_is_an_error_and_is_not_cached(
        static_server, small_store: Path, tmp_path: Path) -> None:
    pack_store(small_store, static_server.root / "small.zip", progress=False)
    static_server.truncate.add("/small.zip")
    with pytest.raises(EmbedstoreError) as err:
        open_remote(f"{static_server.url}/small.zip", cache_dir=tmp_path / "cache")
    assert "truncated" in _one_line(err)
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_cached_chunk_is_fetched_again(static_server, small_store: Path, tmp_path: Path,
                                                 assert_same_arrays, damage: str) -> None:
    url = _serve(static_server, small_store)
    assert_same_arrays(str(small_store), open_remote(url, cache_dir=tmp_path / "cache"))
    cached = next((tmp_path / "cache").rglob("features/tiny-vit/level_2/c/0/0/0/0/0"))
    data = bytearray(cached.read_bytes())
    if damage == "truncate":
        cached.write_bytes(data[: len(data) // 2])
    else:
        data[len(data) // 3] ^= 0x01
        cached.write_bytes(bytes(data))
    again = open_remote(url, cache_dir=tmp_path / "cache")
    assert_same_arrays(str(small_store), again)
    assert again.fetches == 1
    assert static_server.requests["/small.zarr/features/tiny-vit/level_2/c/0/0/0/0/0"] == 2
    assert cached.stat().st_size == (small_store / "features/tiny-vit/level_2/c/0/0/0/0/0").stat().st_size \
        + FOOTER.size


def test_evict_makes_the_next_read_come_from_the_server(static_server, small_store: Path,
                                                        tmp_path: Path) -> None:
    url = _serve(static_server, small_store)
    store = open_remote(url, cache_dir=tmp_path / "cache")
    group = zarr.open_group(store=store, mode="r")
    group["images"][:]
    group["images"][:]
    assert static_server.requests["/small.zarr/images/c/0/0/0/0"] == 1
    store.evict("images/c/0/0/0/0")
    group["images"][:]
    assert static_server.requests["/small.zarr/images/c/0/0/0/0"] == 2


def test_evicting_a_remote_zip_downloads_it_again(static_server, small_store: Path, tmp_path: Path,
                                                  assert_same_arrays) -> None:
    pack_store(small_store, static_server.root / "small.zip", progress=False)
    store = open_remote(f"{static_server.url}/small.zip", cache_dir=tmp_path / "cache")
    store.evict("images/c/0/0/0/0")
    assert static_server.requests["/small.zip"] == 2
    assert_same_arrays(str(small_store), store)


def test_remote_stores_are_read_only_and_other_schemes_refused(tmp_path: Path) -> None:
    with pytest.raises(EmbedstoreError) as err:
        open_remote("http://127.0.0.1:1/x.zarr", read_only=False)
    assert "read-only" in _one_line(err)
    with pytest.raises(EmbedstoreError) as err:
        open_remote("ftp://127.0.0.1/x.zarr", cache_dir=tmp_path)
    assert "unsupported address" in _one_line(err)
