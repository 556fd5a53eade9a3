"""Shared fixtures: a small synthetic store with tiny-encoder features, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real samples not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic H&E tiles with tiny-vit features (random weights, seed 0), ingested and extracted."""
    from embedstore.pipeline import extract_into_store

    path = tmp_path_factory.mktemp("stores") / "synthetic.zarr"
    extract_into_store(path, "tiny-vit", dataset="synthetic", options={"n": 24}, weights="random",
                       device="cpu", show_progress=False)
    return path
