"""open_remote over a loopback S3 endpoint (moto in server mode): anonymous and credentialed reads."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedstore.errors import EmbedstoreError

boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

from embedstore.share.remote import open_remote  # noqa: E402

ROOT_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret-value"}


@pytest.fixture(scope="module")
def s3_endpoint(small_store: Path) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 with bucket ``public`` (objects public-read) and ``private``."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    for bucket, acl in (("public", {"ACL": "public-read"}), ("private", {})):
        client.create_bucket(Bucket=bucket)
        for path in small_store.rglob("*"):
            if path.is_file():
                client.upload_file(str(path), bucket, f"small.zarr/{path.relative_to(small_store).as_posix()}",
                                   ExtraArgs=acl)
    yield endpoint
    server.stop()


@pytest.fixture(autouse=True)
def _no_ambient_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws/credentials
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def _one_line(err: pytest.ExceptionInfo[EmbedstoreError]) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_public_bucket_reads_anonymously_with_the_same_arrays(s3_endpoint: str, small_store: Path,
                                                                tmp_path: Path, assert_same_arrays) -> None:
    store = open_remote("s3://public/small.zarr", endpoint=s3_endpoint, cache_dir=tmp_path / "cache")
    assert store._store.fs.anon is True
    assert_same_arrays(str(small_store), store)
    again = open_remote("s3://public/small.zarr", endpoint=s3_endpoint, cache_dir=tmp_path / "cache")
    assert_same_arrays(str(small_store), again)
    assert store.fetches > 10 and again.fetches == 0


def test_a_private_bucket_reads_with_the_standard_aws_variables(s3_endpoint: str, small_store: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                assert_same_arrays) -> None:
    for name, value in ROOT_KEYS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    store = open_remote("s3://private/small.zarr", cache_dir=tmp_path / "cache")
    assert store._store.fs.anon is False
    assert_same_arrays(str(small_store), store)


def test_a_private_bucket_without_credentials_is_a_one_line_error(s3_endpoint: str, tmp_path: Path) -> None:
    with pytest.raises(EmbedstoreError) as err:
        open_remote("s3://private/small.zarr", endpoint=s3_endpoint, cache_dir=tmp_path / "cache")
    assert "access denied" in _one_line(err) and "AWS_ACCESS_KEY_ID" in str(err.value)


def test_wrong_credentials_are_a_one_line_error_without_the_secret(s3_endpoint: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import moto.settings

    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks keys from now on
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGKEY000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value-123")
    with pytest.raises(EmbedstoreError) as err:
        open_remote("s3://private/small.zarr", endpoint=s3_endpoint, cache_dir=tmp_path / "cache")
    assert "access denied" in _one_line(err)
    assert "wrong-secret-value-123" not in str(err.value) and "AKIAWRONGKEY000" not in str(err.value)


def test_a_missing_bucket_path_is_a_one_line_error(s3_endpoint: str, tmp_path: Path) -> None:
    with pytest.raises(EmbedstoreError) as err:
        open_remote("s3://public/nothing.zarr", endpoint=s3_endpoint, anonymous=True, cache_dir=tmp_path / "cache")
    assert "no store there" in _one_line(err)


def test_an_unreachable_endpoint_is_a_one_line_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(EmbedstoreError) as err:
        open_remote("s3://public/small.zarr", endpoint=f"http://127.0.0.1:{port}", anonymous=True,
                    cache_dir=tmp_path / "cache")
    assert "cannot connect" in _one_line(err)


def test_the_bucket_policy_fixture_is_not_public_for_private(s3_endpoint: str) -> None:
    from botocore import UNSIGNED
    from botocore.config import Config

    anonymous = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                             config=Config(signature_version=UNSIGNED))
    assert json.loads(anonymous.get_object(Bucket="public", Key="small.zarr/zarr.json")["Body"].read())
    with pytest.raises(Exception, match="403|Forbidden|AccessDenied"):
        anonymous.get_object(Bucket="private", Key="small.zarr/zarr.json")
