"""Read whole block slices of a store's arrays, with a memory-bounded cache of the computed targets.

Targets are computed once per tile (:func:`compute_targets` on view 0) and kept while they fit the
budget; a drawn view is applied later with ``dihedral_targets``, which equals recomputing the targets
on the transformed labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr

from embedstore.store import Store
from embedstore.store.features import load_transform, read_features
from embedstore.store.integrity import read_rows
from embedstore.trainer.targets.maps import Targets, compute_targets


@dataclass
class BlockTiles:
    """Arrays of some tiles of one block, row i = ``index[i]``; levels keep a view axis (n, V', C, h, w)."""

    index: np.ndarray
    levels: list[np.ndarray]
    images: np.ndarray
    targets: list[Targets]


class TargetCache:
    """Targets by tile index, kept while their bytes fit ``budget`` (then computed again on every read)."""

    def __init__(self, budget: int) -> None:
        self._targets: dict[int, Targets] = {}
        self._budget = budget

    def get(self, tile: int) -> Targets | None:
        return self._targets.get(tile)

    def keep(self, tile: int, targets: Targets) -> None:
        nbytes = sum(a.nbytes for a in (targets.contour, targets.directions, targets.weight, targets.types)
                     if a is not None)
        if self._budget >= nbytes:
            self._targets[tile] = targets  # dict item assignment is atomic; readers may race harmlessly
            self._budget -= nbytes


class BlockReader:
    """Reads sorted tiles of one block with one slice per array (used levels, images, labels -> targets).

    Parameters
    ----------
    store : the opened store (read-only).
    group : the feature group of the encoder.
    levels : used levels.
    has_types : read ``labels/class`` too.
    magnification : the dataset's, for :func:`compute_targets`.
    targets : the cache the computed targets go to.
    """

    def __init__(self, store: Store, group: zarr.Group, levels: tuple[int, ...], *, has_types: bool,
                 magnification: str, targets: TargetCache) -> None:
        self.store = store
        self.group = group
        self.levels = levels
        self.has_types = has_types
        self.magnification = magnification
        self.targets = targets
        self.transform = load_transform(group)  # int8 / PCA parameters, loaded once for every block

    def read(self, index: np.ndarray, views: np.ndarray | None) -> BlockTiles:
        """Tiles ``index`` (sorted, one block); keep only ``views`` per tile (None keeps all views).

        Reads are checked (:mod:`embedstore.store.integrity`): a corrupted, missing or non-finite tile
        raises a one-line error naming the array and the sample instead of feeding wrong numbers.
        """
        ids = self.store.sample_ids
        levels = []
        for k in self.levels:
            block = read_features(self.group, k, index, sample_ids=ids, transform=self.transform)
            levels.append(block if views is None else block[np.arange(index.size), views][:, None])
        images = read_rows(self.store.group["images"], index, sample_ids=ids)
        targets = [self.targets.get(int(t)) for t in index]
        if any(t is None for t in targets):
            instance = read_rows(self.store.group["labels/instance"], index, sample_ids=ids)
            classes = read_rows(self.store.group["labels/class"], index, sample_ids=ids) if self.has_types else None
            for i, t in enumerate(index):
                if targets[i] is None:
                    targets[i] = compute_targets(instance[i], None if classes is None else classes[i],
                                                 self.magnification)
                    self.targets.keep(int(t), targets[i])
        return BlockTiles(index=index, levels=levels, images=images, targets=targets)

    def read_lookup(self, index: np.ndarray, views: np.ndarray | None) -> dict[int, tuple[BlockTiles, int]]:
        """:meth:`read`, keyed by tile: tile -> (read tiles, row)."""
        tiles = self.read(index, views)
        return {int(t): (tiles, i) for i, t in enumerate(index)}
