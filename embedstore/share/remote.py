"""Open a published store read-only from a URL, with a local chunk cache.

Supported: ``https://`` / ``http://`` (a store folder served with directory listings, or a
``.zip``), ``s3://bucket/path`` (anonymous, or credentialed through the standard AWS variables;
endpoint through ``AWS_ENDPOINT_URL`` or ``endpoint=``), and ``hf://datasets/ORG/NAME`` (the layout
written by :func:`embedstore.share.hub.push`, pulled once per commit into the cache, verified
against its sha256 index, and opened locally).

Every failure a user can cause (unreachable host, 404, missing or wrong credentials, a truncated
download) surfaces as a one-line :class:`EmbedstoreError` that names the URL and never a token.
Opening never executes remote code: stores are JSON metadata and compressed numeric chunks.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Any

from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore, WrapperStore, ZipStore

from embedstore.errors import EmbedstoreError
from embedstore.share.cache import CachedStore, cache_root_for
from embedstore.share.errors import remote_error, url_scheme

SCHEMES = ("http", "https", "s3", "hf")


def _storage_options(url: str, endpoint: str | None, anonymous: bool | None) -> dict[str, Any]:
    scheme = url_scheme(url)
    if scheme == "s3":
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if anonymous is None:
            anonymous = not (os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE")
                             or (Path.home() / ".aws" / "credentials").is_file())
        options: dict[str, Any] = {"anon": anonymous}
        if endpoint:
            options["endpoint_url"] = endpoint
        return options
    return {}


def _filesystem(url: str, options: dict[str, Any], *, asynchronous: bool) -> tuple[Any, str]:
    from fsspec import url_to_fs

    try:
        return url_to_fs(url, **({"asynchronous": True} if asynchronous else {}), **options)
    except (ImportError, ValueError) as err:
        raise remote_error(url, err) from None


class RemoteZip(WrapperStore[ZipStore]):
    """A remote packed store downloaded whole into the cache (once) and read as a local zip."""

    def __init__(self, url: str, local: Path, options: dict[str, Any], secrets: tuple[str, ...] = ()) -> None:
        self.url, self.local, self._options, self._secrets = url, local, options, secrets
        self.fetches = 0
        if not local.is_file():
            self._download()
        super().__init__(ZipStore(local, mode="r", read_only=True))

    def _download(self) -> None:
        fs, path = _filesystem(self.url, self._options, asynchronous=False)
        partial = self.local.with_name(self.local.name + f".{os.getpid()}.partial")
        self.local.parent.mkdir(parents=True, exist_ok=True)
        try:
            expected = fs.info(path).get("size")
            fs.get_file(path, str(partial))
            if expected is not None and partial.stat().st_size != expected:
                raise EmbedstoreError(f"{self.url}: download truncated ({partial.stat().st_size} of "
                                      f"{expected} bytes); try again")
            try:
                zipfile.ZipFile(partial).close()
            except zipfile.BadZipFile:
                raise EmbedstoreError(f"{self.url}: downloaded file is not a zip (truncated or corrupt)") from None
            os.replace(partial, self.local)
            self.fetches += 1
        except Exception as err:
            raise remote_error(self.url, err, secrets=self._secrets) from None
        finally:
            partial.unlink(missing_ok=True)

    def with_read_only(self, read_only: bool = False) -> RemoteZip:
        if not read_only:
            raise ValueError("a remote zip store is read-only")
        return self

    def evict(self, key: str = "") -> None:
        """Drop the cached zip (it holds every key) and download it again."""
        if self._store._is_open:
            self._store.close()
        self.local.unlink(missing_ok=True)
        self._download()
        self._store = ZipStore(self.local, mode="r", read_only=True)


def _check_is_store(store: Store, url: str) -> None:
    root = sync(store.get("zarr.json", default_buffer_prototype()))
    if root is None:
        raise EmbedstoreError(f"{url}: no store there (no zarr.json at that address; check the URL)")


WRITABLE_SCHEMES = ("s3",)
"""Remote stores that extraction may write into (an object store every dask worker reaches)."""


def check_writable(url: str) -> None:
    """Refuse, before any work, to write into a remote address other than ``s3://``."""
    if url_scheme(url) not in WRITABLE_SCHEMES:
        raise EmbedstoreError(f"{url}: remote stores are read-only except s3://; write to a local folder")


def open_writable(url: str, *, endpoint: str | None = None) -> FsspecStore:
    """A writable zarr store at an ``s3://`` URL, for extraction whose workers all reach the bucket.

    No chunk cache (every write goes to the bucket); credentials and endpoint come from the standard AWS
    variables (``AWS_ENDPOINT_URL`` for a local or on-premises endpoint), so remote workers need the same
    environment. An object PUT is all-or-nothing, so a chunk is never half-written.
    """
    check_writable(url)
    options = _storage_options(url, endpoint, anonymous=None)
    fs, path = _filesystem(url, options, asynchronous=True)
    return FsspecStore(fs=fs, path=path, read_only=False)


def remote_filesystem(url: str) -> tuple[Any, str]:
    """(synchronous fsspec filesystem, path) of a remote store URL, with the same options as reads."""
    return _filesystem(url, _storage_options(url, None, None), asynchronous=False)


def open_remote(url: str, *, cache_dir: str | Path | None = None, read_only: bool = True,
                endpoint: str | None = None, anonymous: bool | None = None,
                token: str | None = None) -> Store:
    """A read-only zarr store for ``url`` whose chunks are cached under ``cache_dir``.

    ``endpoint`` overrides the S3 endpoint (default ``AWS_ENDPOINT_URL``) or the Hub endpoint
    (default ``HF_ENDPOINT``); ``anonymous=None`` uses AWS credentials when the standard variables
    or ``~/.aws/credentials`` provide them and anonymous access otherwise. The returned store has
    ``evict(key)``: drop a cached chunk whose checksum failed so that the next read re-fetches it.
    ``read_only=False`` (extraction into ``s3://``) gives :func:`open_writable` instead.
    """
    if not read_only:
        return open_writable(url, endpoint=endpoint)
    scheme = url_scheme(url)
    if scheme not in SCHEMES:
        raise EmbedstoreError(f"{url}: unsupported address (use https://, http://, s3:// or hf://datasets/ORG/NAME)")
    secrets = (token,) if token else ()
    options = _storage_options(url, endpoint, anonymous)
    cache_root = cache_root_for(url, cache_dir)
    if scheme == "hf":
        from embedstore.share.hub import open_hub_layout

        return LocalStore(open_hub_layout(url, cache_root, endpoint=endpoint, token=token), read_only=True)
    if re.search(r"\.zip/?$", url):
        return RemoteZip(url.rstrip("/"), cache_root / "store.zip", options, secrets)
    fs, path = _filesystem(url, options, asynchronous=True)
    source = FsspecStore(fs=fs, path=path, read_only=True)
    store = CachedStore(source, cache_root, lambda err, key: remote_error(url, err, key, secrets))
    _check_is_store(store, url)
    return store

