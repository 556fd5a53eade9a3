"""`embed bench checksums`: what the per-chunk crc32c checksums and the checked reads cost the training loader.

One synthetic store is extracted with a registered encoder (random weights); a copy of it is rewritten
without the crc32c codec (schema-1 style chunks). The training loader then streams the train split of
both (RAM cache off, no decoder: reading, decoding, checking and collating only), arms taken in turn,
the fastest epoch of each kept. Reported: tiles/s of both and their ratio, plus the share of the
finite/missing check alone (``read_rows`` with and without ``finite`` on the same feature blocks).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from embedstore.datasets import get_dataset
from embedstore.encoders import build_encoder
from embedstore.extract import extract
from embedstore.store import COMPRESSOR, ingest, open_store
from embedstore.store.integrity import read_rows
from embedstore.trainer.bench.train import AllTrain
from embedstore.trainer.data.loader import Loader


def _without_checksums(source: Path, target: Path) -> None:
    """Copy a store with the compressor only (no crc32c): same arrays, chunks, shards, fill and attributes."""
    src = zarr.open_group(source, mode="r")
    dst = zarr.open_group(target, mode="w")
    dst.attrs.update(dict(src.attrs))
    for path, node in src.members(max_depth=None):
        if isinstance(node, zarr.Group):
            dst.require_group(path).attrs.update(dict(node.attrs))
        else:
            copy = dst.create_array(path, shape=node.shape, dtype=node.dtype, chunks=node.chunks,
                                    shards=node.shards, compressors=COMPRESSOR, fill_value=node.fill_value)
            copy[...] = node[...]


def _epoch_seconds(location: Path, batch_size: int) -> float:
    loader = Loader(location, "train", batch_size=batch_size, ram_cache="off", prefetch=0, augment=False)
    start = time.perf_counter()
    for _ in loader.epoch(0):
        pass
    return time.perf_counter() - start


def bench_checksums(encoder: str = "vit-b-22k", *, n_tiles: int = 32, tile_size: int = 256, batch_size: int = 4,
                    repeats: int = 3, workdir: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """One row: loader tiles/s with and without checksums, their ratio, and the finite check's share."""
    with tempfile.TemporaryDirectory(prefix="embed-bench-checksums-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        checked, plain = root / "crc32c.zarr", root / "plain.zarr"
        model = build_encoder(encoder, "random", seed=seed)
        dataset = AllTrain(get_dataset("synthetic", tile_size=tile_size, n=n_tiles))
        extract(ingest(dataset, checked, tile_size=tile_size, show_progress=False), model, device="cpu",
                batch_size=batch_size, show_progress=False)
        _without_checksums(checked, plain)
        for location in (checked, plain):  # warm-up: targets computed, files in the page cache
            _epoch_seconds(location, batch_size)
        with_crc = without_crc = float("inf")
        for _ in range(repeats):
            with_crc = min(with_crc, _epoch_seconds(checked, batch_size))
            without_crc = min(without_crc, _epoch_seconds(plain, batch_size))
        store = open_store(checked)
        group = store.features(model.spec.key)
        blocks = [np.arange(b.start, b.stop) for b in store.blocks()]
        timings = {}
        for finite in (False, True):
            start = time.perf_counter()
            for _ in range(repeats):
                for index in blocks:
                    for k in range(4):
                        # raw reads on purpose: this times the checked decode of the stored chunks
                        read_rows(group[f"level_{k}"], index, finite=finite)
            timings[finite] = time.perf_counter() - start
    return {
        "encoder": model.spec.key, "tiles": n_tiles, "tile_size": tile_size, "batch_size": batch_size,
        "repeats": repeats,
        "with_checksums_tiles_per_s": n_tiles / with_crc, "without_checksums_tiles_per_s": n_tiles / without_crc,
        "ratio": without_crc / with_crc,
        "finite_check_share": (timings[True] - timings[False]) / timings[True],
    }

