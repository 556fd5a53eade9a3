"""Dataset ingest: tiles, labels and the sample table written into a new store once, resumable by block."""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from embedstore import __version__
from embedstore.datasets import Tile, TileDataset
from embedstore.errors import EmbedstoreError
from embedstore.progress import progress_bar
from embedstore.store.digest import write_manifest
from embedstore.store.zarr_store import (
    CHUNK_CODECS,
    DEFAULT_TILES_PER_SHARD,
    SAMPLE_TEXT_COLUMNS,
    SCHEMA_VERSION,
    Store,
    _zarr_store,
    open_store,
    store_exists,
)


def recorded_options(options: Mapping[str, Any]) -> dict[str, str]:
    """The ingest options as the store's ``dataset.options`` attribute records them: sorted, as strings."""
    return {k: str(v) for k, v in sorted(options.items())}


def _dataset_signature(dataset: TileDataset, tile_size: int, options: dict[str, Any]) -> dict[str, Any]:
    info = dataset.info.to_dict()
    info["options"] = recorded_options(options)
    info["n_samples"] = len(dataset)
    info["tile_size"] = tile_size
    return info


def _create(location: str, dataset: TileDataset, tile_size: int, tiles_per_shard: int,
            signature: dict[str, Any]) -> Store:
    n, s, t = len(dataset), tile_size, tiles_per_shard
    group = zarr.open_group(store=_zarr_store(location, read_only=False), mode="w")

    def tiles(name: str, shape: tuple[int, ...], dtype: str) -> None:
        group.create_array(name, shape=(n, *shape), dtype=dtype, chunks=(1, *shape),
                           shards=(t, *shape), compressors=CHUNK_CODECS, fill_value=0)

    tiles("images", (s, s, 3), "uint8")
    tiles("labels/instance", (s, s), "int32")
    if dataset.info.classes:
        tiles("labels/class", (s, s), "uint8")
    for col in SAMPLE_TEXT_COLUMNS:
        group.create_array(f"samples/{col}", shape=(n,), dtype=str, chunks=(t,), compressors=CHUNK_CODECS)
    for col in ("origin", "source_shape"):
        group.create_array(f"samples/{col}", shape=(n, 2), dtype="int32", chunks=(t, 2), fill_value=0,
                           compressors=CHUNK_CODECS)
    n_blocks = -(-n // t)
    group.create_array("samples/ingested", shape=(n_blocks,), dtype=bool, chunks=(1,), fill_value=False,
                       compressors=CHUNK_CODECS)
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
    remote = "://" in text  # an s3:// output: its root zarr.json says whether a store is there
    if store_exists(text) if remote else Path(text).exists() and any(Path(text).iterdir()):
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
    with progress_bar(f"ingest {dataset.info.name}", total=store.n_samples, unit="tiles", enabled=show_progress,
                      done=store.n_samples - sum(b.stop - b.start for _, b in pending)) as advance:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [(pool.submit(_write_block, store, dataset, k, b), b) for k, b in pending]
            for future, b in futures:
                future.result()
                advance(b.stop - b.start)
    write_manifest(text, "")  # hashes of images, labels and samples, before the store says complete
    meta = dict(store.group.attrs["embedstore"])
    meta["ingest_complete"] = True
    store.group.attrs["embedstore"] = meta
    store.meta = meta
    return store
