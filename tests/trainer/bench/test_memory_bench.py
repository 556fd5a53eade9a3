"""`embed bench memory`: each training run is its own process and reports its own peak RSS."""

from __future__ import annotations

from pathlib import Path

from embedstore.trainer.bench.memory import bench_memory


def test_each_store_size_trains_in_a_fresh_process_that_reports_its_peak(tmp_path: Path) -> None:
    rows = bench_memory("tiny-vit", base_tiles=10, tile_size=64, scales=(1, 2), workdir=tmp_path)
    assert [(r["scale"], r["tiles"]) for r in rows] == [(1, 10), (2, 20)]
    assert all(200 * 2**20 < r["peak_rss_bytes"] < 8 * 2**30 for r in rows)  # torch alone needs ~200 MiB
    assert rows[0]["ratio"] == 1.0 and rows[1]["ratio"] == rows[1]["peak_rss_bytes"] / rows[0]["peak_rss_bytes"]
    assert (tmp_path / "run-x2" / "seed_0" / "best.safetensors").is_file()  # the runs really trained
