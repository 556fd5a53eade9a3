"""`embed info`, `verify` and `train` on a store served over loopback HTTP: the second epoch reads the cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from embedstore.cli.app import main


def _serve(static_server, small_store: Path) -> str:
    shutil.copytree(small_store, static_server.root / "small.zarr")
    return f"{static_server.url}/small.zarr"


def test_info_and_verify_read_a_served_store(static_server, small_store: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    url = _serve(static_server, small_store)
    assert main(["info", url, "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "8 tiles of 64 px" in capsys.readouterr().out
    assert main(["verify", url, "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0
    assert "ok: 8 tiles" in capsys.readouterr().out


def test_training_from_a_served_store_fetches_each_chunk_once(static_server, small_store: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    url = _serve(static_server, small_store)
    monkeypatch.delenv("EMBEDSTORE_CACHE_DIR", raising=False)
    args = ["train", "--store", url, "--epochs", "2", "--ram-cache", "off", "--split-val", "train", "--device", "cpu",
            "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    def fetched() -> dict[str, int]:  # chunk files that exist (all-fill chunks are never written: a 404)
        return {path: n for path, n in static_server.requests.items()
                if "/c/" in path and (static_server.root / path.lstrip("/")).is_file()}

    first = fetched()
    assert first and set(first.values()) == {1}  # epoch 2 read every chunk from the cache
    assert main([*args, "--out", str(tmp_path / "run2")]) == 0
    assert fetched() == first  # and so did a whole second run


def test_a_damaged_served_chunk_stops_training_in_one_line(static_server, small_store: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    url = _serve(static_server, small_store)
    shard = next(p for p in (static_server.root / "small.zarr" / "features" / "tiny-vit" / "level_0").rglob("*")
                 if p.is_file() and "/c/" in p.as_posix())
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))
    code = main(["train", "--store", url, "--epochs", "1", "--ram-cache", "off", "--split-val", "train",
                 "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--quiet", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 1
    assert "features/tiny-vit/level_0: tile" in err and "not decode" in err and "Traceback" not in err
