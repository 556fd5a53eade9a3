"""Pool each labelled cell's tokens into one feature vector per level (CellViT++-style cell tokens).

A cell's token at level k is the mean of that level's tokens weighted by the fraction of the cell's pixels
that fall in each token (the one-hot mask block-summed onto the level's grid), so a cell smaller than a
token still gets the token it lies in. The table of a split is written as ``cells_<split>.npz`` (plain
arrays, no pickle).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from embedstore.errors import EmbedstoreError
from embedstore.progress import progress_bar
from embedstore.store import open_store
from embedstore.store.features import load_transform, read_features
from embedstore.store.integrity import read_rows
from embedstore.store.zarr_store import Store, feature_key


@dataclass(frozen=True)
class CellTable:
    """Pooled cell tokens of one split: row i is one cell."""

    features: dict[int, np.ndarray]  # level -> (n, C_level) float32
    cls: np.ndarray  # (n,) int64, class id 1..K (the cell's majority class)
    tile: np.ndarray  # (n,) int64, store tile index
    cell: np.ndarray  # (n,) int64, instance id within the tile
    class_names: tuple[str, ...]  # names of class ids 1..K
    encoder: str
    split: str

    def __len__(self) -> int:
        return int(self.cls.shape[0])


def token_overlap(size: int, grid: int) -> np.ndarray:
    """(grid, size) float64: the length of pixel p that lies in token i, for ``size`` pixels on ``grid`` tokens.

    When ``grid`` divides ``size`` this is the block-sum (each token sums its size/grid pixels).
    """
    edges = np.arange(grid + 1) * (size / grid)
    lo = np.maximum(edges[:-1, None], np.arange(size)[None, :])
    hi = np.minimum(edges[1:, None], np.arange(size)[None, :] + 1)
    return np.clip(hi - lo, 0.0, None)


def cell_weights(instance: np.ndarray, cells: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(n, h, w) float64: fraction of each cell's pixels in each token of an (h, w) grid; rows sum to 1.

    ``instance``: (S, S) instance ids; ``cells``: (n,) ids to weigh.
    """
    onehot = (instance[None] == cells[:, None, None]).astype(np.float64)  # (n, S, S)
    rows, cols = token_overlap(instance.shape[0], grid[0]), token_overlap(instance.shape[1], grid[1])
    area = np.einsum("ys,nst,xt->nyx", rows, onehot, cols)
    return area / area.sum(axis=(1, 2), keepdims=True)


def _majority_class(instance: np.ndarray, classes: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(n,) the most frequent non-zero class id under each cell (0 when none)."""
    out = np.zeros(len(cells), np.int64)
    for i, c in enumerate(cells):
        counts = np.bincount(classes[instance == c].astype(np.int64))
        counts[0] = 0
        out[i] = int(counts.argmax()) if counts.sum() else 0
    return out


def _levels_of(group: zarr.Group, levels: Sequence[int] | None) -> list[int]:
    have = sorted(int(k.split("_")[1]) for k in group.array_keys() if k.startswith("level_"))
    if levels is None:
        return have
    unknown = [k for k in levels if k not in have]
    if unknown:
        raise EmbedstoreError(f"--level {unknown[0]}: the features have levels {', '.join(map(str, have))}")
    return list(levels)


def pool_cell_tokens(store: Store | str | Path, encoder_key: str, levels: Sequence[int] | None, split: str,
                     *, show_progress: bool = True) -> CellTable:
    """Cell tokens of every labelled cell of every committed tile of ``split`` (view 0 of the cached features).

    A cell is labelled when the majority of its pixels carry a class id (labels/class > 0).
    ``levels``: the levels to pool (None: all). Raises :class:`EmbedstoreError` for a store without classes,
    an encoder without features, or a split without committed labelled cells.
    """
    store = store if isinstance(store, Store) else open_store(store)
    if not store.classes or "labels/class" not in store.group:
        raise EmbedstoreError(f"{store.location}: the dataset has no cell classes; cell tokens need labels/class")
    key = feature_key(encoder_key)
    group = store.features(key)
    levels = _levels_of(group, levels)
    tiles = store.samples().indices(split)
    done = np.asarray(group["done"][:])[:, 0]
    tiles = tiles[done[tiles]]
    feats: dict[int, list[np.ndarray]] = {k: [] for k in levels}
    cls, tile_ix, cell_ix = [], [], []
    blocks = [b for b in store.blocks() if np.any((tiles >= b.start) & (tiles < b.stop))]
    with progress_bar(f"cells {split}", total=len(tiles), unit="tiles", enabled=show_progress) as advance:
        ids = store.sample_ids
        transform = load_transform(group)
        for block in blocks:
            index = tiles[(tiles >= block.start) & (tiles < block.stop)]
            inst = read_rows(store.array("labels/instance"), index, sample_ids=ids)
            klass = read_rows(store.array("labels/class"), index, sample_ids=ids)
            level_rows = {k: read_features(group, k, index, sample_ids=ids, transform=transform)[:, 0]
                          for k in levels}
            for j, t in enumerate(index):
                cells = np.unique(inst[j])
                cells = cells[cells > 0]
                majority = _majority_class(inst[j], klass[j], cells)
                cells, majority = cells[majority > 0], majority[majority > 0]
                if cells.size:
                    for k in levels:
                        tokens = level_rows[k][j].astype(np.float64)  # (C, h, w)
                        w = cell_weights(inst[j], cells, tokens.shape[1:])
                        feats[k].append(np.einsum("nyx,cyx->nc", w, tokens).astype(np.float32))
                    cls.append(majority)
                    tile_ix.append(np.full(cells.size, t, np.int64))
                    cell_ix.append(cells.astype(np.int64))
                advance(1)
    if not cls:
        raise EmbedstoreError(f"{store.location}: split '{split}' has no labelled cells in committed tiles of '{key}'")
    return CellTable(features={k: np.concatenate(v) for k, v in feats.items()}, cls=np.concatenate(cls),
                     tile=np.concatenate(tile_ix), cell=np.concatenate(cell_ix), class_names=store.classes,
                     encoder=key, split=split)


def table_path(folder: str | Path, split: str) -> Path:
    """Where the table of ``split`` lives inside an output folder."""
    return Path(folder) / f"cells_{split}.npz"


def save_cells(table: CellTable, folder: str | Path) -> Path:
    """Write ``cells_<split>.npz`` (``level_k``, ``class``, ``tile``, ``cell``, names) whole, via a temporary file."""
    path = table_path(folder, table.split)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    arrays = {f"level_{k}": v for k, v in table.features.items()}
    with open(tmp, "wb") as f:
        np.savez(f, **arrays, **{"class": table.cls}, tile=table.tile, cell=table.cell,
                 class_names=np.array(table.class_names, dtype=str), encoder=np.array(table.encoder),
                 split=np.array(table.split))
    os.replace(tmp, path)
    return path


def load_cells(folder: str | Path, split: str) -> CellTable:
    """Read the table ``save_cells`` wrote for ``split`` (no pickle)."""
    path = table_path(folder, split)
    if not path.is_file():
        raise EmbedstoreError(f"{path}: no cell table for split '{split}'; run `embed cells` first")
    with np.load(path, allow_pickle=False) as z:
        levels = sorted(int(k.split("_")[1]) for k in z.files if k.startswith("level_"))
        return CellTable(features={k: z[f"level_{k}"] for k in levels}, cls=z["class"], tile=z["tile"],
                         cell=z["cell"], class_names=tuple(str(s) for s in z["class_names"]),
                         encoder=str(z["encoder"]), split=str(z["split"]))
