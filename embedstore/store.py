"""The Zarr v3 store: schema, open/create, dataset ingest and the sample table.

One store holds one tiled dataset (images, labels, sample table) and any number of encoder feature
groups (written by :mod:`embedstore.extract`). Every array is sharded so that one shard holds
``tiles_per_shard`` consecutive tiles; a shard (a "block") has exactly one writer at a time and its
completion marker chunk belongs to that same writer, so concurrent writers can never lose data.
See docs/store-format.md for the full specification.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import zarr
from zarr.codecs import BloscCodec

from embedstore import __version__
from embedstore.datasets import Tile, TileDataset
from embedstore.errors import EmbedstoreError
from embedstore.progress import progress_bar

SCHEMA_VERSION = 1
DEFAULT_TILES_PER_SHARD = 16
COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")
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


def _zarr_store(location: str | Path, read_only: bool) -> Any:
    """A zarr store for a folder, a .zip file, or a URL (http(s)://, s3://, hf://, any fsspec protocol)."""
    text = str(location)
    if _is_remote(text):
        if not read_only:
            raise EmbedstoreError(f"{text}: remote stores are read-only; write to a local folder")
        try:
            return zarr.storage.FsspecStore.from_url(text, read_only=True)
        except (ImportError, ValueError) as err:
            raise EmbedstoreError(f"{text}: cannot open remote store ({err})") from None
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
    if version != SCHEMA_VERSION:
        raise EmbedstoreError(
            f"{location}: store schema version {version} is not supported by embedstore {__version__} "
            f"(schema version {SCHEMA_VERSION}); use a matching embedstore version"
        )


def open_store(location: str | Path, mode: str = "r") -> Store:
    """Open an existing store read-only (``mode='r'``, the default for shared stores) or for appending (``'r+'``)."""
    text = str(location)
    read_only = mode == "r"
    if not _is_remote(text) and not Path(text).exists():
        raise EmbedstoreError(f"{text}: no such store")
    try:
        group = zarr.open_group(store=_zarr_store(text, read_only), mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError) as err:
        raise EmbedstoreError(f"{text}: not a zarr store ({err})") from None
    meta = dict(group.attrs.get("embedstore", {}))
    check_schema(meta, text)
    return Store(group, text)


def _dataset_signature(dataset: TileDataset, tile_size: int, options: dict[str, Any]) -> dict[str, Any]:
    info = dataset.info.to_dict()
    info["options"] = {k: str(v) for k, v in sorted(options.items())}
    info["n_samples"] = len(dataset)
    info["tile_size"] = tile_size
    return info


def _create(location: str, dataset: TileDataset, tile_size: int, tiles_per_shard: int,
            signature: dict[str, Any]) -> Store:
    n, s, t = len(dataset), tile_size, tiles_per_shard
    group = zarr.open_group(store=_zarr_store(location, read_only=False), mode="w")

    def tiles(name: str, shape: tuple[int, ...], dtype: str) -> None:
        group.create_array(name, shape=(n, *shape), dtype=dtype, chunks=(1, *shape),
                           shards=(t, *shape), compressors=COMPRESSOR, fill_value=0)

    tiles("images", (s, s, 3), "uint8")
    tiles("labels/instance", (s, s), "int32")
    if dataset.info.classes:
        tiles("labels/class", (s, s), "uint8")
    for col in SAMPLE_TEXT_COLUMNS:
        group.create_array(f"samples/{col}", shape=(n,), dtype=str, chunks=(t,))
    for col in ("origin", "source_shape"):
        group.create_array(f"samples/{col}", shape=(n, 2), dtype="int32", chunks=(t, 2), fill_value=0)
    n_blocks = -(-n // t)
    group.create_array("samples/ingested", shape=(n_blocks,), dtype=bool, chunks=(1,), fill_value=False)
    group.attrs["embedstore"] = {
        "schema_version": SCHEMA_VERSION,
        "created_by": f"embedstore {__version__}",
        "n_samples": n,
        "tile_size": s,
        "tiles_per_shard": t,
        "dataset": signature,
        "ingest_complete": False,
    }
    return Store(group, location)


def _write_block(store: Store, dataset: TileDataset, block_index: int, block: slice) -> None:
    """Load and write one shard-aligned block of tiles, then its marker (the single writer of that block)."""
    tiles: list[Tile] = [dataset.tile(i) for i in range(block.start, block.stop)]
    g = store.group
    g["images"][block] = np.stack([t.image for t in tiles])
    g["labels/instance"][block] = np.stack([t.instance for t in tiles])
    if "class" in g["labels"]:
        g["labels/class"][block] = np.stack([t.cls for t in tiles])
    for col in SAMPLE_TEXT_COLUMNS:
        g[f"samples/{col}"][block] = np.array([getattr(t, "sample_id" if col == "id" else col) for t in tiles])
    g["samples/origin"][block] = np.array([t.origin for t in tiles], dtype=np.int32)
    g["samples/source_shape"][block] = np.array([t.source_shape for t in tiles], dtype=np.int32)
    g["samples/ingested"][block_index] = True


def ingest(dataset: TileDataset, location: str | Path, *, tile_size: int = 256,
           options: dict[str, Any] | None = None, tiles_per_shard: int = DEFAULT_TILES_PER_SHARD,
           workers: int = 2, show_progress: bool = True) -> Store:
    """Write a dataset's tiles, labels and sample table into a store once.

    Re-running on a complete store of the same dataset is a no-op; an interrupted ingest resumes at the
    first block without its marker. A store holding a different dataset is refused.
    """
    text = str(location)
    signature = _dataset_signature(dataset, tile_size, options or {})
    if len(dataset) == 0:
        raise EmbedstoreError(f"dataset '{dataset.info.name}' has no tiles")
    if Path(text).exists() and any(Path(text).iterdir()):
        store = open_store(text, mode="r+")
        if store.dataset != json.loads(json.dumps(signature)):
            raise EmbedstoreError(
                f"{text}: store holds dataset {store.dataset.get('name')!r} with other options or size; "
                "use another --store path"
            )
        if store.ingest_complete:
            return store
    else:
        store = _create(text, dataset, tile_size, tiles_per_shard, signature)
    done = np.asarray(store.group["samples/ingested"][:])
    pending = [(k, b) for k, b in enumerate(store.blocks()) if not done[k]]
    with progress_bar(f"ingest {dataset.info.name}", total=store.n_samples, unit="tiles",
                      enabled=show_progress) as advance:
        advance(store.n_samples - sum(b.stop - b.start for _, b in pending))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [(pool.submit(_write_block, store, dataset, k, b), b) for k, b in pending]
            for future, b in futures:
                future.result()
                advance(b.stop - b.start)
    meta = dict(store.group.attrs["embedstore"])
    meta["ingest_complete"] = True
    store.group.attrs["embedstore"] = meta
    store.meta = meta
    return store


def store_bytes(location: str | Path) -> int:
    """Bytes on disk of a store or of a folder inside it: a local or remote (fsspec URL) folder's
    ``du``, a zip store's file size, 0 when nothing is there."""
    text = str(location)
    if text.endswith(".zip") and not _is_remote(text):
        return Path(text).stat().st_size if Path(text).is_file() else 0
    fs, path = fsspec.core.url_to_fs(text)
    return int(fs.du(path)) if fs.exists(path) else 0
