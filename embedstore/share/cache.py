"""A local chunk cache over any read-only zarr store: the second read of a chunk file is local.

zarr reads a sharded array with byte-range requests (the shard index, then one inner chunk at a
time), and zarr's own experimental ``CacheStore`` keeps range reads in memory only, so a new process
(the next training run) would download everything again. This layer caches whole objects on disk:
on the first read of a key it fetches the full object from the source, writes it under
``cache_dir`` through a temporary file and an atomic rename (a partial download never lands), then
serves every byte range of that key from the local copy.

Each cached file ends with a 16-byte footer (magic, CRC-32, length). A cached file that is
truncated or whose CRC does not match (checked once per key per process) is evicted and fetched
again, so a damaged cache entry is never read twice. ``evict(key)`` drops one entry on request
(e.g. when a chunk fails its crc32c codec check).

Metadata documents (``zarr.json``) are not cached: they are tiny and always read fresh, so a
re-published store is seen as it is now. Chunk files of a published store are assumed immutable;
delete the cache folder (``cache_root``) if the publisher rewrote a store in place.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import TypeVar

from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import WrapperStore

FOOTER = struct.Struct("<4sIQ")  # magic, crc32 of the data, data length
MAGIC = b"ESC1"
ErrorMapper = Callable[[BaseException, str], BaseException]
T = TypeVar("T")


def default_cache_dir() -> Path:
    """``$EMBEDSTORE_CACHE_DIR``, else the user cache dir (``platformdirs``), else ``~/.cache/embedstore``."""
    if env := os.environ.get("EMBEDSTORE_CACHE_DIR"):
        return Path(env)
    try:
        from platformdirs import user_cache_dir
    except ImportError:
        return Path.home() / ".cache" / "embedstore"
    return Path(user_cache_dir("embedstore"))


def cache_root_for(url: str, cache_dir: str | Path | None) -> Path:
    """The cache folder of one source URL: ``<cache_dir>/<sha256(url)[:16]>``."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return base / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


def _byte_slice(size: int, byte_range: ByteRequest | None) -> tuple[int, int]:
    """(start, stop) of a zarr byte request inside an object of ``size`` bytes."""
    if byte_range is None:
        return 0, size
    if isinstance(byte_range, RangeByteRequest):
        return byte_range.start, min(byte_range.end, size)
    if isinstance(byte_range, OffsetByteRequest):
        return byte_range.offset, size
    if isinstance(byte_range, SuffixByteRequest):
        return max(0, size - byte_range.suffix), size
    raise TypeError(f"unexpected byte range {byte_range!r}")


def _is_metadata(key: str) -> bool:
    return key == "zarr.json" or key.endswith("/zarr.json")


class CachedStore(WrapperStore[Store]):
    """A read-only view of ``source`` whose chunk files are cached whole under ``cache_root``.

    ``map_error(err, key)`` turns a source failure into the exception to raise (one-line user
    errors); missing keys still read as missing (``None``), as zarr expects.
    """

    def __init__(self, source: Store, cache_root: str | Path, map_error: ErrorMapper | None = None) -> None:
        super().__init__(source)
        self.cache_root = Path(cache_root)
        self._map_error = map_error
        self._checked: set[str] = set()
        self.fetches = 0

    def with_read_only(self, read_only: bool = False) -> CachedStore:
        if not read_only:
            raise ValueError("a cached remote store is read-only")
        return self

    def _with_store(self, store: Store) -> CachedStore:
        return type(self)(store, self.cache_root, self._map_error)

    def __repr__(self) -> str:
        return f"CachedStore({self._store!r}, cache_root={str(self.cache_root)!r})"

    def _path(self, key: str) -> Path:
        return self.cache_root / key

    def evict(self, key: str) -> None:
        """Drop the cached copy of ``key``; its next read comes from the source again."""
        self._path(key).unlink(missing_ok=True)
        self._checked.discard(key)

    def _read_cached(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        """Bytes of a healthy cached entry, or None (absent, or damaged and evicted)."""
        path = self._path(key)
        try:
            with path.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size - FOOTER.size
                if size < 0:
                    raise ValueError("shorter than its footer")
                handle.seek(size)
                magic, crc, length = FOOTER.unpack(handle.read(FOOTER.size))
                if magic != MAGIC or length != size:
                    raise ValueError("truncated")
                if key not in self._checked:
                    handle.seek(0)
                    if zlib.crc32(handle.read(size)) != crc:
                        raise ValueError("crc mismatch")
                    self._checked.add(key)
                start, stop = _byte_slice(size, byte_range)
                handle.seek(start)
                return handle.read(max(0, stop - start))
        except FileNotFoundError:
            return None
        except ValueError:
            self.evict(key)
            return None

    def _write_cached(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
        try:
            with partial.open("wb") as handle:
                handle.write(data)
                handle.write(FOOTER.pack(MAGIC, zlib.crc32(data), len(data)))
            os.replace(partial, path)
            self._checked.add(key)
        finally:
            partial.unlink(missing_ok=True)

    async def _source(self, awaitable: Awaitable[T], key: str) -> T:
        try:
            return await awaitable
        except Exception as err:
            if self._map_error is None:
                raise
            raise self._map_error(err, key) from None

    async def get(self, key: str, prototype: BufferPrototype,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        if _is_metadata(key):
            return await self._source(self._store.get(key, prototype, byte_range), key)
        cached = await asyncio.to_thread(self._read_cached, key, byte_range)
        if cached is None:
            whole = await self._source(self._store.get(key, prototype), key)
            if whole is None:
                return None
            data = whole.to_bytes()
            self.fetches += 1
            await asyncio.to_thread(self._write_cached, key, data)
            start, stop = _byte_slice(len(data), byte_range)
            cached = data[start:stop]
        return prototype.buffer.from_bytes(cached)

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> list[Buffer | None]:
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def exists(self, key: str) -> bool:
        if self._path(key).is_file():
            return True
        return bool(await self._source(self._store.exists(key), key))

    async def _listing(self, items: AsyncIterator[str], what: str) -> AsyncIterator[str]:
        try:
            async for item in items:
                yield item
        except Exception as err:
            if self._map_error is None:
                raise
            raise self._map_error(err, what) from None

    def list(self) -> AsyncIterator[str]:
        return self._listing(self._store.list(), "")

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        return self._listing(self._store.list_prefix(prefix), prefix)

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        return self._listing(self._store.list_dir(prefix), prefix)
