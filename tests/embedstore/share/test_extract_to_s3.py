"""Extraction into an s3:// store (a loopback moto server): one process and a dask cluster write what a
local run writes, a rerun is a no-op, and the written store verifies."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from embedstore.cli.app import main
from embedstore.errors import EmbedstoreError
from embedstore.extract.pipeline import extract_into_store
from embedstore.store import open_store, store_exists

boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

SMALL = dict(dataset="synthetic", options={"n": 8}, tile_size=64, weights="random", device="cpu",
             show_progress=False)  # the settings of the tiny_store(8) fixture


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="lab")
    yield url
    server.stop()


@pytest.fixture(autouse=True)
def _aws(monkeypatch: pytest.MonkeyPatch, endpoint: str, tmp_path: Path) -> None:
    """Credentials and endpoint in the standard variables: what dask workers inherit."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)


def _fresh(url: str) -> str:
    assert not store_exists(url)
    return url


def test_one_process_writes_the_same_store_into_s3_as_into_a_folder(tiny_store: Callable[[int], Path],
                                                                     assert_same_arrays, tmp_path: Path) -> None:
    url = _fresh("s3://lab/one.zarr")
    report = extract_into_store(url, "tiny-vit", **SMALL)
    assert report.tiles_written == 8
    remote = open_store(url, cache_dir=tmp_path / "cache")
    assert remote.ingest_complete and remote.feature_keys() == ["tiny-vit"]
    assert_same_arrays(str(tiny_store(8)), remote.group.store)
    again = extract_into_store(url, "tiny-vit", **SMALL)
    assert again.tiles_written == 0 and again.tiles_skipped == 8


def test_a_dask_cluster_writes_into_s3_and_the_store_verifies(tiny_store: Callable[[int], Path], assert_same_arrays,
                                                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed")
    url = _fresh("s3://lab/cluster.zarr")
    report = extract_into_store(url, "tiny-vit", workers=2, **SMALL)
    assert report.tiles_written == 8 and len(report.worker_peak_rss) >= 1
    assert_same_arrays(str(tiny_store(8)), open_store(url, cache_dir=tmp_path / "cache").group.store)
    assert main(["verify", url, "--cache-dir", str(tmp_path / "cache2")]) == 0
    assert "features/tiny-vit" in capsys.readouterr().out


def test_a_read_only_remote_scheme_is_refused_in_one_line() -> None:
    with pytest.raises(EmbedstoreError, match="read-only except s3://"):
        extract_into_store("http://127.0.0.1:9/x.zarr", "tiny-vit", **SMALL)  # port 9: never contacted
