"""Hub layout: the push plan, push -> pull round trip and hf:// reads against a loopback stand-in Hub."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from embedstore.errors import EmbedstoreError
from embedstore.share.hub import (
    INDEX_NAME,
    parse_hub_url,
    pull,
    push,
    push_plan,
)
from embedstore.share.pack import pack_store, unpack_store
from embedstore.share.remote import open_remote
from embedstore.store import open_store
from embedstore.store.digest import compute_manifest
from embedstore.store.verify import verify_store

URL = "hf://datasets/lab/cells"


def _one_line(err: pytest.ExceptionInfo[EmbedstoreError]) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def _store_with_manifest(small_store: Path, tmp_path: Path) -> Path:
    """A copy of the store; its manifests (zarr groups written by ingest and extract) travel in the parts."""
    return unpack_store(pack_store(small_store, tmp_path / "copy.zip", progress=False), tmp_path / "m.zarr")


def test_hub_urls_name_a_dataset_repo_with_optional_revision_and_folder() -> None:
    assert parse_hub_url("hf://datasets/lab/cells").repo_id == "lab/cells"
    address = parse_hub_url("hf://datasets/lab/cells@v1/stores/pannuke")
    assert (address.repo_id, address.revision, address.path) == ("lab/cells", "v1", "stores/pannuke")
    for bad in ("hf://models/lab/cells", "hf://datasets/cells", "https://huggingface.co/datasets/lab/cells"):
        with pytest.raises(EmbedstoreError) as err:
            parse_hub_url(bad)
        assert "hf://datasets/ORG/NAME" in _one_line(err)


def test_the_plan_puts_every_file_in_exactly_one_part_under_the_size_limit(small_store: Path,
                                                                          tmp_path: Path) -> None:
    store = _store_with_manifest(small_store, tmp_path)
    plan = push_plan(store, URL, part_bytes=60_000)
    files = sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file())
    assert sorted(key for part in plan.parts for key in part.keys) == files
    assert {part.unit for part in plan.parts} == {"dataset", "features/tiny-vit"}
    assert len(plan.parts) > 2 and all(part.bytes <= 60_000 or len(part.keys) == 1 for part in plan.parts)
    assert all(key.startswith("features/tiny-vit/") for p in plan.parts if p.unit != "dataset" for key in p.keys)
    assert plan.root_files == ()
    assert plan.repo_files()[0] == INDEX_NAME
    assert all(name.startswith("data/") and name.endswith(".zip") for name in plan.repo_files()[1:])
    assert plan.licences == {"tiny-vit": {"licence": "n/a (random weights only)", "gated": False, "model_page": "",
                                          "restricted": False}}
    text = plan.describe()
    assert "data/features-tiny-vit-000.zip" in text
    assert "features/tiny-vit: encoder weights licence n/a (random weights only)" in text


def test_a_dry_run_plans_without_contacting_the_hub(small_store: Path, fake_hub) -> None:
    plan = push(small_store, URL, dry_run=True, endpoint=fake_hub.endpoint, progress=False)
    assert len(plan.parts) == 2 and fake_hub.repos == {}


def test_push_then_pull_gives_the_same_store(small_store: Path, tmp_path: Path, fake_hub,
                                             assert_same_arrays) -> None:
    store = _store_with_manifest(small_store, tmp_path)
    plan = push(store, URL, part_bytes=60_000, endpoint=fake_hub.endpoint, token="hf_secret_token_1", progress=False)
    uploaded = fake_hub.repos["lab/cells"]
    assert sorted(uploaded) == sorted(plan.repo_files())
    index = json.loads(uploaded[INDEX_NAME])
    for part in index["parts"]:
        assert hashlib.sha256(uploaded[part["path"]]).hexdigest() == part["sha256"]
        assert len(uploaded[part["path"]]) == part["bytes"]
    pulled = pull(URL, tmp_path / "pulled.zarr", endpoint=fake_hub.endpoint)
    assert_same_arrays(str(store), str(pulled))
    assert compute_manifest(pulled)["digest"] == compute_manifest(store)["digest"]
    assert verify_store(open_store(pulled), show_progress=False).ok
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.zip", "m.zarr", "pulled.zarr"]


def test_a_second_push_replaces_the_parts_of_the_first(small_store: Path, fake_hub) -> None:
    push(small_store, URL, part_bytes=30_000, endpoint=fake_hub.endpoint, progress=False)
    many = {name for name in fake_hub.repos["lab/cells"] if name.startswith("data/")}
    plan = push(small_store, URL, endpoint=fake_hub.endpoint, progress=False)
    assert len(many) > 2
    assert sorted(fake_hub.repos["lab/cells"]) == sorted(plan.repo_files())


def test_pull_of_the_dataset_alone_skips_feature_groups(small_store: Path, tmp_path: Path, fake_hub) -> None:
    push(small_store, URL, endpoint=fake_hub.endpoint, progress=False)
    pulled = pull(URL, tmp_path / "dataset-only.zarr", encoders=[], endpoint=fake_hub.endpoint)
    assert open_store(pulled).feature_keys() == [] and "data/features-tiny-vit-000.zip" not in fake_hub.downloads
    with pytest.raises(EmbedstoreError) as err:
        pull(URL, tmp_path / "other.zarr", encoders=["uni"], endpoint=fake_hub.endpoint)
    assert "no features for uni" in _one_line(err)


def test_an_altered_part_is_refused_and_nothing_is_left(small_store: Path, tmp_path: Path, fake_hub) -> None:
    push(small_store, URL, endpoint=fake_hub.endpoint, progress=False)
    part = "data/features-tiny-vit-000.zip"
    data = bytearray(fake_hub.repos["lab/cells"][part])
    data[len(data) // 2] ^= 0x01
    fake_hub.repos["lab/cells"][part] = bytes(data)
    with pytest.raises(EmbedstoreError) as err:
        pull(URL, tmp_path / "pulled.zarr", endpoint=fake_hub.endpoint)
    assert "does not match its sha256" in _one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_a_part_with_a_zip_slip_entry_is_refused(small_store: Path, tmp_path: Path, fake_hub) -> None:
    push(small_store, URL, endpoint=fake_hub.endpoint, progress=False)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../outside.txt", b"x")
    repo = fake_hub.repos["lab/cells"]
    index = json.loads(repo[INDEX_NAME])
    index["parts"][0].update(bytes=evil.stat().st_size, sha256=hashlib.sha256(evil.read_bytes()).hexdigest())
    repo[index["parts"][0]["path"]] = evil.read_bytes()
    repo[INDEX_NAME] = json.dumps(index).encode()
    fake_hub.commits["lab/cells"] = "3" * 40  # a new commit, as a real Hub would make
    evil.unlink()
    with pytest.raises(EmbedstoreError) as err:
        pull(URL, tmp_path / "pulled.zarr", endpoint=fake_hub.endpoint)
    assert "unsafe zip entry" in _one_line(err)
    assert list(tmp_path.iterdir()) == [] and not (tmp_path.parent / "outside.txt").exists()


def test_a_repo_without_an_index_cannot_be_pulled(fake_hub, tmp_path: Path) -> None:
    fake_hub.repos["lab/plain"], fake_hub.commits["lab/plain"] = {"README.md": b"hi"}, "1" * 40
    with pytest.raises(EmbedstoreError) as err:
        pull("hf://datasets/lab/plain", tmp_path / "x.zarr", endpoint=fake_hub.endpoint)
    assert "not published with `embed push`" in _one_line(err)


def test_an_unreachable_hub_is_a_one_line_error_without_the_token(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(EmbedstoreError) as err:
        pull(URL, tmp_path / "x.zarr", endpoint=f"http://127.0.0.1:{port}", token="hf_secret_token_2")
    assert "cannot connect" in _one_line(err) and "hf_secret_token_2" not in str(err.value)


def test_hf_urls_of_the_pushed_layout_open_from_a_pull_into_the_cache(small_store: Path, tmp_path: Path, fake_hub,
                                                                      assert_same_arrays) -> None:
    push(small_store, URL, endpoint=fake_hub.endpoint, progress=False)
    first = open_remote(URL, endpoint=fake_hub.endpoint, cache_dir=tmp_path / "cache")
    assert_same_arrays(str(small_store), first)
    downloads = sum(fake_hub.downloads.values())
    second = open_remote(URL, endpoint=fake_hub.endpoint, cache_dir=tmp_path / "cache")
    assert_same_arrays(str(small_store), second)
    assert fake_hub.downloads["data/dataset-000.zip"] == 1
    assert sum(fake_hub.downloads.values()) == downloads


def test_hf_urls_of_a_repo_without_the_layout_are_refused(fake_hub, tmp_path: Path) -> None:
    fake_hub.repos["lab/plain"], fake_hub.commits["lab/plain"] = {"zarr.json": b"{}"}, "2" * 40
    with pytest.raises(EmbedstoreError) as err:
        open_remote("hf://datasets/lab/plain", endpoint=fake_hub.endpoint, cache_dir=tmp_path / "cache")
    assert "not published with `embed push`" in _one_line(err)
