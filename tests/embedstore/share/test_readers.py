"""A store reads with plain zarr, xarray and dask (the snippets of docs/sharing.md), without embedstore."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from embedstore.store import open_store


def test_plain_zarr_reads_features_labels_and_the_sample_table(small_store: Path) -> None:
    root = zarr.open_group(str(small_store), mode="r")
    level_2 = root["features/tiny-vit/level_2"]
    done = root["features/tiny-vit/done"][:].all(axis=1)
    ids = root["samples/id"][:]
    assert level_2.shape[:2] == (8, 1) and done.all() and len(set(ids.tolist())) == 8
    store = open_store(small_store)
    np.testing.assert_array_equal(level_2[:4], store.features("tiny-vit")["level_2"][:4])
    np.testing.assert_array_equal(root["labels/instance"][3], store.array("labels/instance")[3])


def test_xarray_wraps_a_level_with_named_dimensions(small_store: Path) -> None:
    xr = pytest.importorskip("xarray")
    level = zarr.open_array(str(small_store), path="features/tiny-vit/level_2", mode="r")
    features = xr.DataArray(level[:], dims=("tile", "view", "channel", "y", "x"))
    ids = zarr.open_array(str(small_store), path="samples/id", mode="r")[:]
    features = features.assign_coords(tile=ids)
    assert features.sizes == {"tile": 8, "view": 1, "channel": 64, "y": 4, "x": 4}
    np.testing.assert_array_equal(features.sel(tile=ids[5]).values, level[5])


def test_dask_reads_a_level_lazily_one_tile_per_block(small_store: Path) -> None:
    da = pytest.importorskip("dask.array")
    lazy = da.from_zarr(str(small_store), component="features/tiny-vit/level_2")
    assert lazy.chunksize[0] == 1
    eager = zarr.open_array(str(small_store), path="features/tiny-vit/level_2", mode="r")[:]
    np.testing.assert_allclose(lazy.astype("float32").mean(axis=(1, 3, 4)).compute(),
                               eager.astype("float32").mean(axis=(1, 3, 4)), rtol=1e-6)
