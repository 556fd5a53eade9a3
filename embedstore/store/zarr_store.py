"""The Zarr v3 store: schema, opening, the sample table and the typed accessors of an opened store.

One store holds one tiled dataset (images, labels, sample table) and any number of encoder feature
groups (written by :mod:`embedstore.extract`). Every array is sharded so that one shard holds
``tiles_per_shard`` consecutive tiles; a shard (a "block") has exactly one writer at a time and its
completion marker chunk belongs to that same writer, so concurrent writers can never lose data.
See docs/store-format.md for the full specification.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from embedstore import __version__
from embedstore.errors import EmbedstoreError

#: Schema of the stores this version writes; 2 adds a crc32c checksum to every chunk and NaN-filled features.
SCHEMA_VERSION = 2
#: Schemas this version reads (1: no per-chunk checksums; `verify` says so).
READABLE_SCHEMAS = (1, 2)
DEFAULT_TILES_PER_SHARD = 16
COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")
#: Bytes-to-bytes codecs of every inner chunk written with schema 2: compress, then checksum the result.
CHUNK_CODECS = (COMPRESSOR, Crc32cCodec())
SAMPLE_TEXT_COLUMNS = ("id", "split", "group", "source")


@dataclass(frozen=True)
class SampleTable:
    """Per-tile metadata, all arrays of length N."""

    id: np.ndarray
    split: np.ndarray
    group: np.ndarray
    source: np.ndarray
    origin: np.ndarray  # (N, 2) int32: (y, x) in the source image
    source_shape: np.ndarray  # (N, 2) int32: (H, W) of the source image

    def indices(self, split: str) -> np.ndarray:
        """Sorted tile indices of one split."""
        return np.flatnonzero(self.split == split)


def _is_remote(location: str) -> bool:
    return "://" in location


def store_exists(location: str | Path) -> bool:
    """Whether a store (its root ``zarr.json``) is at ``location``: a folder, a .zip or a remote URL."""
    text = str(location)
    if _is_remote(text):
        from embedstore.share.remote import remote_filesystem

        fs, path = remote_filesystem(text)
        return bool(fs.exists(f"{path.rstrip('/')}/zarr.json"))
    return Path(text).is_file() if text.endswith(".zip") else (Path(text) / "zarr.json").is_file()


def _zarr_store(location: str | Path, read_only: bool, cache_dir: str | Path | None = None) -> Any:
    """A zarr store for a folder, a .zip file, or a URL (http(s)://, s3://, hf://; cached under ``cache_dir``)."""
    text = str(location)
    if _is_remote(text):
        from embedstore.share.remote import open_remote  # share imports store: imported where it is used

        return open_remote(text, cache_dir=cache_dir, read_only=read_only)
    if text.endswith(".zip"):
        if not read_only:
            raise EmbedstoreError(f"{text}: zip stores are read-only; unpack it to write")
        if not Path(text).is_file():
            raise EmbedstoreError(f"{text}: no such zip file")
        return zarr.storage.ZipStore(text, mode="r", read_only=True)
    return zarr.storage.LocalStore(text, read_only=read_only)


def feature_key(encoder_key: str) -> str:
    """Group name of an encoder inside ``features/`` (``timm:resnet18`` -> ``timm-resnet18``)."""
    return encoder_key.replace(":", "-").replace("/", "-")


class Store:
    """An opened embedstore: the zarr group plus typed accessors for its schema."""

    def __init__(self, group: zarr.Group, location: str) -> None:
        self.group = group
        self.location = location
        meta = dict(group.attrs.get("embedstore", {}))
        self.meta = meta
        self.dataset: dict[str, Any] = dict(meta.get("dataset", {}))

    @property
    def read_only(self) -> bool:
        return bool(self.group.store.read_only)

    @property
    def n_samples(self) -> int:
        return int(self.meta["n_samples"])

    @property
    def tile_size(self) -> int:
        return int(self.meta["tile_size"])

    @property
    def tiles_per_shard(self) -> int:
        return int(self.meta["tiles_per_shard"])

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.dataset.get("classes", ()))

    @property
    def ingest_complete(self) -> bool:
        return bool(self.meta.get("ingest_complete", False))

    def blocks(self) -> list[slice]:
        """Shard-aligned tile ranges: the unit of writing and of resuming."""
        n, t = self.n_samples, self.tiles_per_shard
        return [slice(s, min(s + t, n)) for s in range(0, n, t)]

    def array(self, name: str) -> zarr.Array:
        try:
            return self.group[name]
        except KeyError:
            raise EmbedstoreError(f"{self.location}: store has no array '{name}'") from None

    def samples(self) -> SampleTable:
        cols = {c: np.array(self.array(f"samples/{c}")[:].tolist(), dtype=str) for c in SAMPLE_TEXT_COLUMNS}
        return SampleTable(
            origin=np.asarray(self.array("samples/origin")[:]),
            source_shape=np.asarray(self.array("samples/source_shape")[:]),
            **cols,
        )

    @functools.cached_property
    def sample_ids(self) -> list[str]:
        """``samples/id`` as strings (read once): how checked reads name damaged tiles."""
        return [str(s) for s in np.asarray(self.array("samples/id")[:]).tolist()]

    def feature_keys(self) -> list[str]:
        if "features" not in self.group:
            return []
        return sorted(self.group["features"].group_keys())

    def features(self, key: str) -> zarr.Group:
        if key not in self.feature_keys():
            have = ", ".join(self.feature_keys()) or "none"
            raise EmbedstoreError(f"{self.location}: no features for encoder '{key}' (store has: {have})")
        return self.group[f"features/{key}"]


def check_schema(meta: dict[str, Any], location: str) -> None:
    """Refuse stores written by an incompatible schema version, naming both versions."""
    if not meta:
        raise EmbedstoreError(f"{location}: not an embedstore store (no 'embedstore' attributes)")
    version = meta.get("schema_version")
    if version not in READABLE_SCHEMAS:
        newer = isinstance(version, int) and version > SCHEMA_VERSION
        raise EmbedstoreError(
            f"{location}: store schema version {version} is not supported by embedstore {__version__} "
            f"(schema version {SCHEMA_VERSION}, reads {', '.join(map(str, READABLE_SCHEMAS))}); "
            + ("upgrade embedstore to read it" if newer else "use a matching embedstore version")
        )


def open_store(location: str | Path, mode: str = "r", *, cache_dir: str | Path | None = None) -> Store:
    """Open an existing store read-only (``mode='r'``, the default for shared stores) or for appending (``'r+'``).

    ``location``: a folder, a ``.zip``, or a URL (``https://``, ``s3://``, ``hf://datasets/ORG/NAME``, a remote
    ``.zip``), whose chunks are cached under ``cache_dir`` (default: the user cache folder).
    """
    text = str(location)
    read_only = mode == "r"
    if not _is_remote(text) and not Path(text).exists():
        raise EmbedstoreError(f"{text}: no such store")
    try:
        group = zarr.open_group(store=_zarr_store(text, read_only, cache_dir), mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError) as err:
        raise EmbedstoreError(f"{text}: not a zarr store ({err})") from None
    meta = dict(group.attrs.get("embedstore", {}))
    check_schema(meta, text)
    return Store(group, text)


def store_bytes(location: str | Path) -> int:
    """Bytes on disk of a store or of a folder inside it: a local or remote (fsspec URL) folder's
    ``du``, a zip store's file size, 0 when nothing is there."""
    text = str(location)
    if text.endswith(".zip") and not _is_remote(text):
        return Path(text).stat().st_size if Path(text).is_file() else 0
    fs, path = fsspec.core.url_to_fs(text)
    return int(fs.du(path)) if fs.exists(path) else 0


def completeness(group: zarr.Group) -> tuple[int, int]:
    """(committed tiles, total tiles) of a feature group: a tile counts when all its views are done."""
    done = np.asarray(group["done"][:])
    return int(done.all(axis=1).sum()), int(done.shape[0])
