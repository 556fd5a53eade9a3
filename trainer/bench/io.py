"""`embed bench io`: store write and read throughput per codec, for 1..N writer threads and processes.

Extraction writes one feature shard per block, one writer per shard. This benchmark writes the same
shards without any encoder: an array of ``n_tiles`` float16 feature tiles (one ViT-B level by default,
768 x 16 x 16, 393 kB per tile) in 16-tile shards, with each codec of :data:`CODECS` (the store's
Blosc zstd + crc32c, Blosc lz4 + crc32c, no compression + crc32c). The blocks are dealt round robin to
``k`` writers, threads of one process or separate processes, each opening the array itself and writing
whole shards. Each writer times its own writes; throughput is the bytes written over the slowest
writer's time, so process start-up is not counted. Reads: every shard read back by one reader, the
first time after the write ("first", files likely in the page cache) and once more ("again").

Writes skip zarr's fill-value comparison of every inner chunk (``write_empty_chunks``), as extraction
does (:func:`embedstore.extract.run.write_block`); one more single-thread row per codec ("fill check")
writes with the comparison on, the write path before that change. A writer process encodes with one zarr
thread (``threading.max_workers=1``): zarr's default pool lets a single process spread its encoding over
every core, so on a small machine "2 processes" would otherwise measure two processes fighting for the
cores one of them already used, not how writing scales with cores.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from embedstore.errors import EmbedstoreError

TILES_PER_SHARD = 16
#: name -> bytes-to-bytes codecs of each inner chunk (the checksum always last, as in the store).
CODECS: dict[str, tuple[Any, ...]] = {
    "zstd3-bitshuffle": (BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"), Crc32cCodec()),
    "lz4-shuffle": (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), Crc32cCodec()),
    "none": (Crc32cCodec(),),
}


def _tiles(start: int, count: int, shape: tuple[int, ...]) -> np.ndarray:
    """Feature-like float16 tiles, (count, 1, *shape): smooth channels plus noise, seeded by tile index."""
    rng = np.random.default_rng(start)
    base = rng.standard_normal((count, 1, shape[0], 1, 1)).astype(np.float32)
    return (base + 0.5 * rng.standard_normal((count, 1, *shape))).astype(np.float16)


def _write_blocks(path: str, blocks: list[int], n_tiles: int, shape: tuple[int, ...], fill_check: bool = False,
                  zarr_threads: int | None = None) -> tuple[float, int]:
    """Write whole shards ``blocks`` of the array at ``path``; (seconds spent writing, bytes written).

    ``fill_check``: compare each inner chunk with the fill value before writing (zarr's default);
    ``zarr_threads``: cap zarr's encoding pool in this process (set before its first use: a fresh process).
    """
    if zarr_threads is not None:
        zarr.config.set({"threading.max_workers": zarr_threads})
    array = zarr.open_array(path, mode="r+").with_config({"write_empty_chunks": not fill_check})
    data = {b: _tiles(b * TILES_PER_SHARD, min(TILES_PER_SHARD, n_tiles - b * TILES_PER_SHARD), shape)
            for b in blocks}  # made before the clock starts: only the write is timed
    start = time.perf_counter()
    for b, tiles in data.items():
        array[b * TILES_PER_SHARD:b * TILES_PER_SHARD + len(tiles)] = tiles
    return time.perf_counter() - start, sum(t.nbytes for t in data.values())


def _create(path: Path, n_tiles: int, shape: tuple[int, ...], codecs: tuple[Any, ...]) -> None:
    zarr.create_array(path, shape=(n_tiles, 1, *shape), dtype="float16", chunks=(1, 1, *shape),
                      shards=(TILES_PER_SHARD, 1, *shape), compressors=codecs, fill_value=float("nan"))


def _write(path: Path, n_tiles: int, shape: tuple[int, ...], writers: int, kind: str) -> tuple[float, int]:
    """(seconds of the slowest writer, bytes) for ``writers`` threads or processes sharing the blocks
    (``kind`` "threads", "processes" or "fill check": one thread with zarr's fill-value comparison on)."""
    n_blocks = -(-n_tiles // TILES_PER_SHARD)
    deals = [list(range(w, n_blocks, writers)) for w in range(writers)]
    if kind != "processes":
        check = kind == "fill check"
        with ThreadPoolExecutor(max_workers=writers) as pool:
            results = list(pool.map(lambda blocks: _write_blocks(str(path), blocks, n_tiles, shape, check), deals))
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=writers, mp_context=context) as pool:
            results = list(pool.map(_write_blocks, [str(path)] * writers, deals, [n_tiles] * writers,
                                    [shape] * writers, [False] * writers, [1] * writers))
    return max(s for s, _ in results), sum(b for _, b in results)


def _read_seconds(path: Path) -> float:
    array = zarr.open_array(path, mode="r")
    start = time.perf_counter()
    for s in range(0, array.shape[0], TILES_PER_SHARD):
        np.asarray(array[s:s + TILES_PER_SHARD])
    return time.perf_counter() - start


def bench_io(n_tiles: int = 64, *, shape: tuple[int, int, int] = (768, 16, 16), max_workers: int = 2,
             codecs: tuple[str, ...] = tuple(CODECS), kinds: tuple[str, ...] = ("fill check", "threads", "processes"),
             workdir: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per (codec, kind, writers): write MB/s and tiles/s, speed-up over one writer of that kind
    (for "fill check": the one-thread write without the check over the one with it), read MB/s, bytes/tile."""
    unknown = [c for c in codecs if c not in CODECS]
    if unknown or n_tiles < 1 or max_workers < 1:
        raise EmbedstoreError(f"bench io: codecs must be among {', '.join(CODECS)}, n_tiles and workers >= 1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="embed-bench-io-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        for codec in codecs:
            for kind in kinds:
                single = None
                for writers in range(1, (1 if kind == "fill check" else max_workers) + 1):
                    path = root / f"{codec}-{kind}-{writers}.zarr"
                    _create(path, n_tiles, shape, CODECS[codec])
                    seconds, nbytes = _write(path, n_tiles, shape, writers, kind)
                    stored = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
                    first, again = _read_seconds(path), _read_seconds(path)
                    mb_s = nbytes / seconds / 1e6
                    single = single or mb_s
                    rows.append({"codec": codec, "kind": kind, "writers": writers, "write_mb_s": mb_s,
                                 "write_tiles_per_s": n_tiles / seconds, "speedup": mb_s / single,
                                 "read_first_mb_s": nbytes / first / 1e6, "read_again_mb_s": nbytes / again / 1e6,
                                 "stored_bytes_per_tile": stored / n_tiles, "raw_bytes_per_tile": nbytes / n_tiles})
            _fill_check_ratio([r for r in rows if r["codec"] == codec])
    return rows


def _fill_check_ratio(rows: list[dict[str, Any]]) -> None:
    """Give the "fill check" row of one codec the gain of skipping the check: one thread without / with it."""
    check = [r for r in rows if r["kind"] == "fill check"]
    plain = [r for r in rows if r["kind"] == "threads" and r["writers"] == 1]
    if check and plain:
        check[0]["speedup"] = plain[0]["write_mb_s"] / check[0]["write_mb_s"]
