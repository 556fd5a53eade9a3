"""Builders of tiny hand-drawn label maps and the real label maps the metric tests read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

RowMap = Callable[..., np.ndarray]


def _row_map(*segments: tuple[int, int, int], length: int) -> np.ndarray:
    """A (1, length) instance map with `label` on columns [start, stop) for each (label, start, stop)."""
    m = np.zeros((1, length), np.int32)
    for label, start, stop in segments:
        m[0, start:stop] = label
    return m


def _dots(shape: tuple[int, int], *points: tuple[int, int, int]) -> np.ndarray:
    """A map with one-pixel instances: value at (row, col) for each (row, col, value)."""
    m = np.zeros(shape, np.int32)
    for r, c, v in points:
        m[r, c] = v
    return m


@pytest.fixture
def row_map() -> RowMap:
    return _row_map


@pytest.fixture
def dots() -> Callable[..., np.ndarray]:
    return _dots


@pytest.fixture(scope="session")
def consep_tiles(real_data: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """16 real 256 px CoNSeP Test tiles (instance, class) cut from test_1 and test_2 without overlap."""
    tiles = []
    for name in ("test_1", "test_2"):
        labels = sio.loadmat(real_data / "consep" / "Test" / "Labels" / f"{name}.mat")
        inst, cls = labels["inst_map"].astype(np.int32), labels["type_map"].astype(np.int32)
        for y in (0, 256):
            for x in (0, 256, 512, 744):
                tiles.append((inst[y:y + 256, x:x + 256], cls[y:y + 256, x:x + 256]))
    return tiles
