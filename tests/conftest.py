"""Shared fixtures: a small synthetic store with tiny-encoder features, built once per session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    """The models under test are small: a second thread gains little and loses a lot on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real samples not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic H&E tiles with tiny-vit features (random weights, seed 0), ingested and extracted."""
    from embedstore.extract.pipeline import extract_into_store

    path = tmp_path_factory.mktemp("stores") / "synthetic.zarr"
    extract_into_store(path, "tiny-vit", dataset="synthetic", options={"n": 24}, weights="random",
                       device="cpu", show_progress=False)
    return path


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Path]:
    """``tiny_store(n)``: a store of n synthetic 64 px H&E tiles (3 classes) with tiny-vit features (random
    weights, seed 0), built once per n for the whole session. Read it only; copy it to damage it."""
    from embedstore.extract.pipeline import extract_into_store

    built: dict[int, Path] = {}

    def make(n: int) -> Path:
        if n not in built:
            path = tmp_path_factory.mktemp(f"tiny{n}") / "s.zarr"
            extract_into_store(path, "tiny-vit", dataset="synthetic", options={"n": n}, tile_size=64,
                               weights="random", device="cpu", show_progress=False)
            built[n] = path
        return built[n]

    return make
