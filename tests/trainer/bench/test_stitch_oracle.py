"""The stitched oracle: exact targets as maps, tiled as ingest tiles, blended, scored on the whole image."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from embedstore.trainer.bench.stitch_oracle import bench_stitch_oracle


@pytest.mark.parametrize("variant", ["cisca", "improved"])
def test_overlapping_spline_blend_loses_nothing_against_the_per_tile_oracle(real_data: Path, variant: str) -> None:
    r = bench_stitch_oracle(real_data / "consep", tile=256, stride=128, window="spline", variant=variant, images=1)
    assert r["n_images"] == 1 and r["n_tiles"] == 49  # test_1: starts 0, 128, ..., 640 and 744 per axis
    assert r["stitched_bpq"] >= r["per_tile_bpq"] - 0.005


def test_tiles_without_overlap_cut_cells_at_the_seams(real_data: Path) -> None:
    # Each tile's direction maps ramp over its own piece of a cut cell; blended without overlap the two
    # ramps meet at the seam and the direction-map cut splits the cell there.
    r = bench_stitch_oracle(real_data / "consep", tile=256, window="uniform", variant="cisca", images=1)
    assert r["stride"] == 256 and r["n_tiles"] == 16
    assert r["stitched_bpq"] < r["per_tile_bpq"] - 0.01


def test_cli_prints_one_row_per_setting(real_data: Path) -> None:
    from embedstore.cli.app import app

    result = CliRunner().invoke(app, ["bench", "stitch-oracle", "--data-dir", str(real_data / "consep"), "--images", "1", "--variant", "nocut",
                                      "--stride", "256"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "nocut" in line]
    assert len(rows) == 2 and "uniform" in rows[0] and "spline" in rows[1]
