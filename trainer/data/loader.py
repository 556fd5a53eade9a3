"""Stream (levels, image, targets) batches of one split from a store, reading each shard whole.

The pieces: :func:`~embedstore.trainer.data.plan.epoch_plan` fixes the order and the dihedral view of
every position from ``(seed, epoch)`` only, so a run is reproducible and the RAM cache on and off give
identical batches; :class:`~embedstore.trainer.data.reader.BlockReader` reads block slices and keeps
the computed targets; :func:`~embedstore.trainer.data.batch.collate` builds a :class:`Batch`;
:mod:`~embedstore.trainer.data.memory` decides the RAM mode. :class:`Loader` wires them.

RAM mode (``ram_cache``): ``"on"`` holds the split's features (used levels, all cached views), images and
targets in memory after one pass over the store; ``"off"`` streams them per epoch, reading whole block
slices of every used level in reader threads, one window ahead, and keeps only the drawn view of each
tile; ``"auto"`` picks "on" when the estimate fits ``memory_fraction`` of the available memory. Targets
are kept in RAM in either mode as long as they fit the same budget.

Only tiles whose ``done`` marker is set for every view are used. The store is opened read-only and never
written.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, get_args

import numpy as np
import zarr

from embedstore.errors import EmbedstoreError
from embedstore.progress import progress_bar
from embedstore.store import Store, feature_key, open_store
from embedstore.threads import background
from embedstore.trainer.data.batch import Batch, Sample, collate
from embedstore.trainer.data.memory import RamCache, memory_budget, tile_bytes, use_ram
from embedstore.trainer.data.plan import epoch_plan, window_bounds
from embedstore.trainer.data.reader import BlockReader, BlockTiles, TargetCache


def resolve_feature_key(store: Store, key: str | None) -> str:
    """The feature group to train on: ``key`` (encoder name or group key), or the only group of the store."""
    keys = store.feature_keys()
    if key is None:
        if len(keys) != 1:
            have = ", ".join(keys) or "none"
            raise EmbedstoreError(f"{store.location}: give --encoder; the store has feature groups: {have}")
        return keys[0]
    key = feature_key(key)
    store.features(key)  # raises naming the groups the store has
    return key


class Loader:
    """Batches of one split of a store's tiles for one encoder's cached features (see module docstring).

    Parameters
    ----------
    store : an opened store or its location (opened read-only).
    split : split name in ``samples/split`` (train / val / test).
    encoder_key : feature group; None takes the only one.
    levels : ascending subset of 0..3 to read (the decoder's ``cfg.levels``, or the union of several
        decoders'); ``()`` reads no level array, only images and labels (the no-encoder baseline), from
        the tiles the feature group has committed, so a baseline sees the same tiles as its encoder.
    batch_size : tiles per batch; the last batch of an epoch may be smaller unless ``drop_last``.
    shuffle : shard-shuffle the order every epoch (else store order).
    augment : draw a random cached view per tile and epoch (only when the group has 8 views).
    seed : data seed: with the epoch it fixes the order and the views.
    ram_cache : "auto", "on" or "off".
    memory_fraction : share of the available memory that "auto" (and the target cache) may fill.
    require_complete : refuse a feature group with uncommitted tiles in this split instead of skipping them.
    window_blocks : blocks per shuffle window (also the read-ahead unit when streaming).
    readers : threads that read and decode blocks.
    prefetch : batches assembled ahead of the consumer in a background thread; 0 reads and assembles
        each batch when it is asked for. Use 0 when the consumer's compute already uses every core (CPU
        training): a background reader then only slows torch's parallel kernels down.
    show_progress : progress bar while filling the RAM cache.
    """

    def __init__(self, store: Store | str | Path, split: str, *, encoder_key: str | None = None,
                 levels: tuple[int, ...] = (0, 1, 2, 3), batch_size: int = 4, shuffle: bool = True,
                 augment: bool = True, seed: int = 0, ram_cache: RamCache = "auto",
                 memory_fraction: float = 0.5, require_complete: bool = False, window_blocks: int = 8,
                 readers: int = 2, prefetch: int = 2, drop_last: bool = False, show_progress: bool = False) -> None:
        self.store = store if isinstance(store, Store) else open_store(store, mode="r")
        if batch_size < 1:
            raise EmbedstoreError(f"--batch-size {batch_size}: must be >= 1")
        if ram_cache not in get_args(RamCache):
            raise EmbedstoreError(f"--ram-cache {ram_cache}: expected auto, on or off")
        if list(levels) != sorted(set(levels)) or not set(levels) <= {0, 1, 2, 3}:
            raise EmbedstoreError(f"levels {levels}: must be an ascending subset of 0..3 (empty: none)")
        self.key = resolve_feature_key(self.store, encoder_key)
        self.group: zarr.Group = self.store.features(self.key)
        if "labels" not in self.store.group or "instance" not in self.store.group["labels"]:
            raise EmbedstoreError(f"{self.store.location}: store has no labels (labels/instance); cannot train")
        self.split = split
        self.levels = tuple(int(k) for k in levels)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.window_blocks = max(1, window_blocks)
        self.readers = max(1, readers)
        self.prefetch = max(0, prefetch)
        self.drop_last = drop_last
        self.memory_fraction = memory_fraction
        self.tile_size = self.store.tile_size
        self.has_types = bool(self.store.classes) and "class" in self.store.group["labels"]
        self.n_views = int(self.group.attrs.get("views", 1))
        self.augment = augment and self.n_views > 1
        self.level_shapes = [tuple(s) for s in self.group.attrs["level_shapes"]]
        self.tiles, self.n_missing = self._committed_tiles(require_complete)
        self.reader = BlockReader(self.store, self.group, self.levels, has_types=self.has_types,
                                  magnification=str(self.store.dataset.get("magnification", "40x")),
                                  targets=TargetCache(memory_budget(memory_fraction)))
        self.ram = use_ram(ram_cache, need_bytes=self.n_tiles * self.tile_bytes(self.n_views),
                           fraction=memory_fraction)
        self._cache: dict[int, tuple[BlockTiles, int]] = {}
        if self.ram:
            self._fill_cache(show_progress)

    def _committed_tiles(self, require_complete: bool) -> tuple[np.ndarray, int]:
        """The split's tiles whose every view is committed, and how many are not."""
        in_split = self.store.samples().indices(self.split)
        if in_split.size == 0:
            raise EmbedstoreError(f"{self.store.location}: split '{self.split}' has no tiles")
        committed = np.asarray(self.group["done"][:]).all(axis=1)
        tiles = in_split[committed[in_split]]
        n_missing = int(in_split.size - tiles.size)
        if n_missing and require_complete:
            raise EmbedstoreError(
                f"{self.store.location}: features/{self.key} has {n_missing} of {in_split.size} '{self.split}' "
                "tiles not extracted yet (--require-complete); finish `embed extract` or drop --require-complete"
            )
        if tiles.size == 0:
            raise EmbedstoreError(
                f"{self.store.location}: features/{self.key} has no committed tiles in split '{self.split}'; "
                "run `embed extract`"
            )
        return tiles, n_missing

    # --- sizes -----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Batches per epoch."""
        n = self.tiles.size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def n_tiles(self) -> int:
        """Committed tiles of the split (the tiles an epoch visits)."""
        return int(self.tiles.size)

    @property
    def n_types(self) -> int:
        """Number of cell classes (0 when the store has none)."""
        return len(self.store.classes) if self.has_types else 0

    def tile_bytes(self, views: int) -> int:
        """RAM of one tile with ``views`` views of the used levels, its image and its targets."""
        itemsize = np.dtype(self.reader.transform.dtype).itemsize if self.levels else 0  # decoded, not int8 codes
        return tile_bytes(level_sizes=[int(np.prod(self.level_shapes[k])) for k in self.levels], itemsize=itemsize,
                          views=views, tile_size=self.tile_size, has_types=self.has_types)

    # --- epochs ----------------------------------------------------------------------------------------
    def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(tile order, view per position) of ``epoch``: two int64 (n_tiles,) arrays, a function of (seed, epoch)."""
        return epoch_plan(self.tiles, self.store.tiles_per_shard, self.seed, epoch, shuffle=self.shuffle,
                          window_blocks=self.window_blocks, n_views=self.n_views, augment=self.augment)

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Batches of ``epoch`` from batch ``start_batch`` on (to resume mid-epoch), ``prefetch`` ahead."""
        order, views = self.plan(epoch)
        n_batches = len(self)
        order, views = order[: n_batches * self.batch_size], views[: n_batches * self.batch_size]
        first = start_batch * self.batch_size
        order, views = order[first:], views[first:]
        if self.prefetch == 0:
            yield from self._batch_stream(order, views, ahead=False)
            return
        with background(self._batch_stream(order, views, ahead=True), self.prefetch) as batches:
            yield from batches

    # --- reading ---------------------------------------------------------------------------------------
    def _batch_stream(self, order: np.ndarray, views: np.ndarray, ahead: bool) -> Iterator[Batch]:
        """Batches in plan order; when streaming, whole blocks are read per window (the next one ahead if ``ahead``)."""
        windows = ([(0, int(order.size))] if self.ram
                   else window_bounds(order, self.store.tiles_per_shard, self.window_blocks))
        with ThreadPoolExecutor(max_workers=self.readers) as pool:
            pending: list[Future] | None = None
            samples: list[Sample] = []
            for w, (start, stop_at) in enumerate(windows):
                if self.ram:
                    lookup = self._cache
                else:
                    if pending is None:
                        pending = self._submit(pool, order, views, windows[w])
                    lookup = {t: item for f in pending for t, item in f.result().items()}
                    pending = (self._submit(pool, order, views, windows[w + 1])
                               if ahead and w + 1 < len(windows) else None)
                for i in range(start, stop_at):
                    tiles, row = lookup[int(order[i])]
                    samples.append((tiles, row, int(views[i])))
                    if len(samples) == self.batch_size or i == order.size - 1:
                        yield collate(samples, all_views=self.ram, has_types=self.has_types)
                        samples = []

    def _submit(self, pool: ThreadPoolExecutor, order: np.ndarray, views: np.ndarray,
                window: tuple[int, int]) -> list[Future]:
        """Read the blocks of one window (drawn views only) in the reader pool."""
        tiles, tile_views = order[window[0]:window[1]], views[window[0]:window[1]]
        per_block = self.store.tiles_per_shard
        futures = []
        for b in np.unique(tiles // per_block):
            mask = tiles // per_block == b
            idx = np.argsort(tiles[mask], kind="stable")
            futures.append(pool.submit(self.reader.read_lookup, tiles[mask][idx], tile_views[mask][idx]))
        return futures

    def _fill_cache(self, show_progress: bool) -> None:
        per_block = self.store.tiles_per_shard
        blocks = [self.tiles[self.tiles // per_block == b] for b in np.unique(self.tiles // per_block)]
        with progress_bar(f"load {self.split} into RAM", total=self.n_tiles, unit="tiles",
                          enabled=show_progress) as advance, ThreadPoolExecutor(max_workers=self.readers) as pool:
            for index, tiles in zip(blocks, pool.map(lambda ix: self.reader.read(ix, None), blocks)):
                for row, t in enumerate(index):
                    self._cache[int(t)] = (tiles, row)
                advance(index.size)


def describe(loader: Loader) -> dict[str, Any]:
    """What a run records about its data: split, tiles, missing tiles, views, RAM mode."""
    return {"split": loader.split, "tiles": loader.n_tiles, "missing": loader.n_missing, "views": loader.n_views,
            "augment": loader.augment, "ram_cache": "on" if loader.ram else "off", "levels": list(loader.levels)}
