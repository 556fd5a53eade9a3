"""`embed bench io`: one writer per shard from threads or processes writes exactly what one writer writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from embedstore.errors import EmbedstoreError
from embedstore.trainer.bench.io import bench_io


def test_threads_and_processes_write_the_same_array_as_one_writer(tmp_path: Path) -> None:
    rows = bench_io(40, shape=(8, 4, 4), max_workers=2, codecs=("zstd3-bitshuffle",), workdir=tmp_path)
    assert [(r["kind"], r["writers"]) for r in rows] == [("fill check", 1), ("threads", 1), ("threads", 2),
                                                         ("processes", 1), ("processes", 2)]
    assert rows[1]["speedup"] == 1.0 and all(r["write_mb_s"] > 0 and r["read_again_mb_s"] > 0 for r in rows)
    assert rows[0]["speedup"] == rows[1]["write_mb_s"] / rows[0]["write_mb_s"]
    reference = np.asarray(zarr.open_array(tmp_path / "zstd3-bitshuffle-threads-1.zarr", mode="r")[:])
    assert np.isfinite(reference.astype(np.float32)).all()  # every tile written (the fill is NaN)
    for kind, writers in (("fill check", 1), ("threads", 2), ("processes", 2)):
        written = zarr.open_array(tmp_path / f"zstd3-bitshuffle-{kind}-{writers}.zarr", mode="r")[:]
        np.testing.assert_array_equal(np.asarray(written), reference)


def test_compression_shrinks_and_no_compression_does_not(tmp_path: Path) -> None:
    rows = bench_io(16, shape=(64, 8, 8), max_workers=1, codecs=("zstd3-bitshuffle", "none"), kinds=("threads",),
                    workdir=tmp_path)
    ratio = {r["codec"]: r["stored_bytes_per_tile"] / r["raw_bytes_per_tile"] for r in rows}
    assert ratio["none"] >= 1.0 > ratio["zstd3-bitshuffle"]


def test_an_unknown_codec_is_a_user_error() -> None:
    with pytest.raises(EmbedstoreError, match="codecs must be among"):
        bench_io(8, codecs=("brotli",))
