"""Stream (levels, image, targets) batches of one split from a store, reading each shard whole.

Order of an epoch. Tiles are shuffled with a shard-shuffle buffer: the split's shards ("blocks") are
permuted, consecutive runs of ``window_blocks`` blocks form a window, and the tiles inside each window
are permuted. The order and the dihedral view of every position depend only on ``(seed, epoch)``, never
on the RAM mode, the number of reader threads or the models that consume the batches, so a run is
reproducible and the RAM cache on and off give identical batches.

RAM mode (``ram_cache``): ``"on"`` holds the split's features (used levels, all cached views), images and
targets in memory after one pass over the store; ``"off"`` streams them per epoch, reading whole block
slices of every used level in reader threads, one window ahead, and keeps only the drawn view of each
tile; ``"auto"`` picks "on" when the estimate fits ``memory_fraction`` of the available memory.
Targets are computed once per tile (:func:`compute_targets` on view 0) and kept in RAM in either mode as
long as they fit the same budget; the drawn view is applied with ``dihedral_targets``, which equals
recomputing the targets on the transformed labels.

Only tiles whose ``done`` marker is set for every view are used. The store is opened read-only and never
written.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import zarr

from embedstore.imaging.dihedral import dihedral
from embedstore.errors import EmbedstoreError
from embedstore.progress import progress_bar
from embedstore.store import Store, feature_key, open_store
from embedstore.threads import stop_producer
from embedstore.trainer.targets.dihedral import dihedral_targets
from embedstore.trainer.targets.maps import Targets, compute_targets

RamCache = Literal["auto", "on", "off"]


@dataclass
class Batch:
    """One training batch (B tiles); the tensors the decoder and the losses take.

    Attributes
    ----------
    levels : used levels, each float32 (B, C_k, h_k, w_k), already in the drawn view.
    image : float32 (B, 3, S, S) RGB in [0, 1], in the drawn view.
    contour : int64 (B, S, S) in {0 boundary, 1 body, 2 background}.
    directions : float32 (B, 4, S, S) h, v, tl, bl in [-1, 1].
    weight : float32 (B, S, S) regression weight.
    types : int64 (B, S, S) class ids (0 = background), or None when the store has no classes.
    tiles : int64 (B,) store indices of the tiles.
    views : int64 (B,) dihedral view index of each tile.
    """

    levels: list[torch.Tensor]
    image: torch.Tensor
    contour: torch.Tensor
    directions: torch.Tensor
    weight: torch.Tensor
    types: torch.Tensor | None
    tiles: np.ndarray
    views: np.ndarray

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on ``device``."""
        def move(x: torch.Tensor) -> torch.Tensor:
            return x.to(device, non_blocking=True)

        return Batch(levels=[move(x) for x in self.levels], image=move(self.image), contour=move(self.contour),
                     directions=move(self.directions), weight=move(self.weight),
                     types=None if self.types is None else move(self.types), tiles=self.tiles, views=self.views)


@dataclass
class _Tiles:
    """Arrays of some tiles of one block, row i = ``index[i]``; levels keep a view axis (n, V', C, h, w)."""

    index: np.ndarray
    levels: list[np.ndarray]
    images: np.ndarray
    targets: list[Targets]


def available_memory() -> int:
    """Bytes of memory this process can still use: MemAvailable, capped by a cgroup v2 limit if any."""
    avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            avail = min(avail, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(int(avail), 0)


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
    levels : ascending subset of 0..3 to read (the decoder's ``cfg.levels``).
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
        if ram_cache not in ("auto", "on", "off"):
            raise EmbedstoreError(f"--ram-cache {ram_cache}: expected auto, on or off")
        if not levels or list(levels) != sorted(set(levels)) or not set(levels) <= {0, 1, 2, 3}:
            raise EmbedstoreError(f"levels {levels}: must be a non-empty ascending subset of 0..3")
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
        self.magnification = str(self.store.dataset.get("magnification", "40x"))
        self.has_types = bool(self.store.classes) and "class" in self.store.group["labels"]
        self.n_views = int(self.group.attrs.get("views", 1))
        self.augment = augment and self.n_views > 1
        self.level_shapes = [tuple(s) for s in self.group.attrs["level_shapes"]]

        in_split = self.store.samples().indices(split)
        if in_split.size == 0:
            raise EmbedstoreError(f"{self.store.location}: split '{split}' has no tiles")
        committed = np.asarray(self.group["done"][:]).all(axis=1)
        self.tiles = in_split[committed[in_split]]
        self.n_missing = int(in_split.size - self.tiles.size)
        if self.n_missing and require_complete:
            raise EmbedstoreError(
                f"{self.store.location}: features/{self.key} has {self.n_missing} of {in_split.size} '{split}' tiles "
                "not extracted yet (--require-complete); finish `embed extract` or drop --require-complete"
            )
        if self.tiles.size == 0:
            raise EmbedstoreError(
                f"{self.store.location}: features/{self.key} has no committed tiles in split '{split}'; "
                "run `embed extract`"
            )
        self._targets: dict[int, Targets] = {}
        self._target_budget = int(memory_fraction * available_memory())
        self.ram = self._resolve_ram(ram_cache)
        self._cache: dict[int, tuple[_Tiles, int]] = {}
        if self.ram:
            self._fill_cache(show_progress)

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
        s = self.tile_size
        itemsize = np.dtype(self.group[f"level_{self.levels[0]}"].dtype).itemsize
        features = sum(int(np.prod(self.level_shapes[k])) for k in self.levels) * views * itemsize
        targets = s * s * (1 + 16 + 4 + (1 if self.has_types else 0))
        return features + 3 * s * s + targets

    def _resolve_ram(self, mode: RamCache) -> bool:
        if mode != "auto":
            return mode == "on"
        return self.n_tiles * self.tile_bytes(self.n_views) <= self.memory_fraction * available_memory()

    # --- epoch plan --------------------------------------------------------------------------------------
    def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(tile order, view per position) of ``epoch``: two int64 (n_tiles,) arrays, a function of (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        order = self.tiles.copy()
        if self.shuffle:
            per_block = self.store.tiles_per_shard
            blocks = np.unique(order // per_block)
            blocks = blocks[rng.permutation(blocks.size)]
            parts = []
            for w in range(0, blocks.size, self.window_blocks):
                window = order[np.isin(order // per_block, blocks[w:w + self.window_blocks])]
                parts.append(window[rng.permutation(window.size)])
            order = np.concatenate(parts)
        views = rng.integers(0, self.n_views, order.size) if self.augment else np.zeros(order.size, dtype=np.int64)
        return order.astype(np.int64), views.astype(np.int64)

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Batches of ``epoch`` from batch ``start_batch`` on (to resume mid-epoch), read ahead in a thread."""
        order, views = self.plan(epoch)
        n_batches = len(self)
        order, views = order[: n_batches * self.batch_size], views[: n_batches * self.batch_size]
        first = start_batch * self.batch_size
        order, views = order[first:], views[first:]
        if self.prefetch == 0:
            with ThreadPoolExecutor(max_workers=self.readers) as pool:
                yield from self._batch_stream(order, views, pool, ahead=False)
            return
        out: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(order, views, out, stop), daemon=True)
        worker.start()
        try:
            while (item := out.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop_producer(worker, out, stop)

    # --- reading ---------------------------------------------------------------------------------------
    def _produce(self, order: np.ndarray, views: np.ndarray, out: queue.Queue, stop: threading.Event) -> None:
        """Producer thread: put the batches of :meth:`_batch_stream` on ``out`` (errors are handed over too)."""
        try:
            with ThreadPoolExecutor(max_workers=self.readers) as pool:
                for batch in self._batch_stream(order, views, pool, ahead=True):
                    if stop.is_set():
                        return
                    out.put(batch)
        except BaseException as err:  # handed to the consumer, which re-raises
            out.put(err)
        out.put(None)

    def _batch_stream(self, order: np.ndarray, views: np.ndarray, pool: ThreadPoolExecutor,
                      ahead: bool) -> Iterator[Batch]:
        """Batches in plan order; when streaming, whole blocks are read per window (the next one ahead if ``ahead``)."""
        windows = self._windows(order)
        pending: list[Future] | None = None
        samples: list[tuple[_Tiles, int, int]] = []
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
                    yield self._collate(samples)
                    samples = []

    def _windows(self, order: np.ndarray) -> list[tuple[int, int]]:
        """Position ranges of ``order`` that each need a new set of blocks (the plan's shuffle windows)."""
        if self.ram or order.size == 0:
            return [(0, int(order.size))]
        per_block = self.store.tiles_per_shard
        block_of = order // per_block
        bounds, seen = [0], set()
        for i, b in enumerate(block_of):
            if b not in seen and len(seen) == self.window_blocks:
                bounds.append(i)
                seen = set()
            seen.add(int(b))
        bounds.append(int(order.size))
        return list(zip(bounds[:-1], bounds[1:]))

    def _submit(self, pool: ThreadPoolExecutor, order: np.ndarray, views: np.ndarray,
                window: tuple[int, int]) -> list[Future]:
        """Read the blocks of one window (drawn views only) in the reader pool."""
        tiles, tile_views = order[window[0]:window[1]], views[window[0]:window[1]]
        per_block = self.store.tiles_per_shard
        futures = []
        for b in np.unique(tiles // per_block):
            mask = tiles // per_block == b
            idx = np.argsort(tiles[mask], kind="stable")
            futures.append(pool.submit(self._read_lookup, tiles[mask][idx], tile_views[mask][idx]))
        return futures

    def _read_lookup(self, index: np.ndarray, views: np.ndarray) -> dict[int, tuple[_Tiles, int]]:
        tiles = self._read(index, views)
        return {int(t): (tiles, i) for i, t in enumerate(index)}

    def _read(self, index: np.ndarray, views: np.ndarray | None) -> _Tiles:
        """Read sorted tiles of one block with one slice per array; keep only ``views`` (None keeps all)."""
        span = slice(int(index[0]), int(index[-1]) + 1)
        rows = index - span.start
        levels = []
        for k in self.levels:
            block = np.asarray(self.group[f"level_{k}"][span])[rows]
            levels.append(block if views is None else block[np.arange(rows.size), views][:, None])
        images = np.asarray(self.store.group["images"][span])[rows]
        targets = [self._targets.get(int(t)) for t in index]
        if any(t is None for t in targets):
            instance = np.asarray(self.store.group["labels/instance"][span])[rows]
            classes = np.asarray(self.store.group["labels/class"][span])[rows] if self.has_types else None
            for i, t in enumerate(index):
                if targets[i] is None:
                    targets[i] = compute_targets(instance[i], None if classes is None else classes[i],
                                                 self.magnification)
                    self._keep_targets(int(t), targets[i])
        return _Tiles(index=index, levels=levels, images=images, targets=targets)

    def _keep_targets(self, tile: int, targets: Targets) -> None:
        nbytes = sum(a.nbytes for a in (targets.contour, targets.directions, targets.weight, targets.types)
                     if a is not None)
        if self._target_budget >= nbytes:
            self._targets[tile] = targets  # dict item assignment is atomic; readers may race harmlessly
            self._target_budget -= nbytes

    def _fill_cache(self, show_progress: bool) -> None:
        per_block = self.store.tiles_per_shard
        blocks = [self.tiles[self.tiles // per_block == b] for b in np.unique(self.tiles // per_block)]
        with progress_bar(f"load {self.split} into RAM", total=self.n_tiles, unit="tiles",
                          enabled=show_progress) as advance, ThreadPoolExecutor(max_workers=self.readers) as pool:
            for index, tiles in zip(blocks, pool.map(lambda ix: self._read(ix, None), blocks)):
                for row, t in enumerate(index):
                    self._cache[int(t)] = (tiles, row)
                advance(index.size)

    # --- assembling ------------------------------------------------------------------------------------
    def _collate(self, samples: list[tuple[_Tiles, int, int]]) -> Batch:
        """Stack samples (tiles, row, view) into a batch, applying each drawn view to image and targets."""
        ram = self.ram
        levels = []
        for k in range(len(self.levels)):
            stacked = np.stack([t.levels[k][row, v if ram else 0] for t, row, v in samples])
            levels.append(torch.from_numpy(stacked).float())
        images = np.stack([dihedral(t.images[row], v) for t, row, v in samples])
        targets = [dihedral_targets(t.targets[row], v) for t, row, v in samples]
        types = None
        if self.has_types:
            types = torch.from_numpy(np.stack([tg.types for tg in targets]).astype(np.int64))
        return Batch(
            levels=levels,
            image=torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0),
            contour=torch.from_numpy(np.stack([tg.contour for tg in targets]).astype(np.int64)),
            directions=torch.from_numpy(np.stack([tg.directions for tg in targets]).astype(np.float32)),
            weight=torch.from_numpy(np.stack([tg.weight for tg in targets]).astype(np.float32)),
            types=types,
            tiles=np.array([t.index[row] for t, row, _ in samples], dtype=np.int64),
            views=np.array([v for _, _, v in samples], dtype=np.int64),
        )


def describe(loader: Loader) -> dict[str, Any]:
    """What a run records about its data: split, tiles, missing tiles, views, RAM mode."""
    return {"split": loader.split, "tiles": loader.n_tiles, "missing": loader.n_missing, "views": loader.n_views,
            "augment": loader.augment, "ram_cache": "on" if loader.ram else "off", "levels": list(loader.levels)}
