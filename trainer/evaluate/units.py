"""Work units of `embed evaluate` and the process pool that predicts, post-processes and scores them.

A unit is one shard-aligned block of tiles, or all tiles of one source image when they are stitched. A
worker process loads the run once (:func:`init_worker`) and keeps it in this module's :data:`_CONTEXT`;
each unit returns only small per-image records (:class:`ImageScore`), never pixel maps.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedstore.progress import progress_bar
from embedstore.store import SampleTable, Store, open_store
from embedstore.store.integrity import read_rows
from embedstore.trainer.evaluate.score import ImageScore, score_maps
from embedstore.trainer.evaluate.stitch import stitch_labels
from embedstore.trainer.inference.maps import LoadedRun, MapBlender, TileMaps, load_run, predict_maps, read_tiles
from embedstore.trainer.postprocess import PostprocessParams

#: What a unit returns: the unit, ``tile[seed][tile][param]`` and ``image[seed][param]`` (None when not stitched).
UnitResult = tuple["WorkUnit", list[list[list[ImageScore]]], list[list[ImageScore]] | None]


@dataclass(frozen=True)
class WorkUnit:
    """Sorted store indices scored together; ``shape`` set when they are stitched into one source image."""

    tiles: tuple[int, ...]
    source: str | None = None
    shape: tuple[int, int] | None = None


@dataclass
class _Context:
    """What a worker needs, built once per process."""

    store: Store
    loaded: LoadedRun
    params: list[PostprocessParams]
    n_classes: int
    radius: float
    batch_size: int


_CONTEXT: _Context | None = None


def init_worker(run: str, store: str, seeds: tuple[int, ...], device: str, params: list[PostprocessParams],
                radius: float, batch_size: int, threads: int) -> None:
    """Pool initializer: one torch thread per process (the pool is the parallelism), load the run once."""
    import torch

    global _CONTEXT
    if threads > 0:
        torch.set_num_threads(threads)
    loaded = load_run(run, seeds=seeds, device=device)
    _CONTEXT = _Context(open_store(store, mode="r"), loaded, params, loaded.n_types, radius, batch_size)


def stitched_maps(tile_maps: Sequence[TileMaps], origins: Sequence[tuple[int, int]], shape: tuple[int, int],
                  n_classes: int) -> TileMaps:
    """One source image's (C, H, W) maps from its tiles' maps at their (y, x) origins.

    The one place stitched evaluation blends tiles: the squared-spline window of ``embed predict``
    (:class:`MapBlender` on :class:`embedstore.imaging.tiling.TileBlender`), so a pixel takes its maps
    mostly from the tile that holds its cell whole (docs/postprocess.md, "Stitched oracle").
    """
    blender = MapBlender(shape, n_classes, window="spline")
    for maps, origin in zip(tile_maps, origins):
        blender.add(maps, origin)
    return blender.result()


def run_unit(unit: WorkUnit) -> UnitResult:
    """Predict, post-process and score one unit: ``tile[seed][tile][param]`` and ``image[seed][param]``."""
    ctx = _CONTEXT
    assert ctx is not None, "worker not initialised"
    index = np.array(unit.tiles, np.int64)
    span = slice(int(index[0]), int(index[-1]) + 1)
    rows = index - span.start
    ids = ctx.store.sample_ids
    true_inst = read_rows(ctx.store.group["labels/instance"], index, sample_ids=ids)
    true_cls = read_rows(ctx.store.group["labels/class"], index, sample_ids=ids) if ctx.n_classes else None
    models = ctx.loaded.models
    maps: list[list[TileMaps]] = [[] for _ in models]
    for start in range(0, index.size, ctx.batch_size):
        chunk = index[start:start + ctx.batch_size]
        feats, images = read_tiles(ctx.store, ctx.loaded.encoder_key, ctx.loaded.levels, chunk)
        for m, seed_maps in enumerate(predict_maps(models, feats, images, ctx.loaded.device)):
            maps[m].extend(seed_maps)
    tile_scores = [[score_maps(tm, true_inst[i], None if true_cls is None else true_cls[i], ctx.params,
                               ctx.n_classes, ctx.radius) for i, tm in enumerate(seed_maps)] for seed_maps in maps]
    image_scores = None
    if unit.shape is not None:
        origins = [tuple(o) for o in np.asarray(ctx.store.group["samples/origin"][span])[rows]]
        gt_inst, gt_cls = stitch_labels(list(true_inst), origins, unit.shape,
                                        None if true_cls is None else list(true_cls))
        image_scores = [score_maps(stitched_maps(seed_maps, origins, unit.shape, ctx.n_classes), gt_inst, gt_cls,
                                   ctx.params, ctx.n_classes, ctx.radius) for seed_maps in maps]
    return unit, tile_scores, image_scores


def make_units(samples: SampleTable, tiles: np.ndarray, per_block: int, stitch: bool) -> list[WorkUnit]:
    """Work units: whole source images when stitching, else shard-aligned blocks of tiles.

    A source with tiles whose features are not extracted yet is scored per tile only (no ``shape``).
    """
    if not stitch:
        blocks = tiles // per_block
        return [WorkUnit(tuple(int(t) for t in tiles[blocks == b])) for b in np.unique(blocks)]
    units = []
    for source in dict.fromkeys(samples.source[tiles].tolist()):
        members = tiles[samples.source[tiles] == source]
        complete = members.size == int(np.sum(samples.source == source))
        shape = tuple(int(v) for v in samples.source_shape[members[0]]) if complete else None
        units.append(WorkUnit(tuple(int(t) for t in members), str(source), shape))
    return units


def map_units(units: list[WorkUnit], init_args: tuple[Any, ...], workers: int, show_progress: bool, label: str
              ) -> list[UnitResult]:
    """Score the units in a spawn process pool (or in this process for ``workers <= 1``), in unit order.

    ``init_args`` are :func:`init_worker`'s arguments; in this process its ``threads`` is ignored (the
    caller's torch thread count is kept).
    """
    total = sum(len(u.tiles) for u in units)
    results = []
    with progress_bar(label, total=total, unit="tiles", enabled=show_progress) as advance:
        if workers <= 1:
            global _CONTEXT
            previous = _CONTEXT
            init_worker(*init_args[:-1], 0)
            try:
                for unit in units:
                    results.append(run_unit(unit))
                    advance(len(unit.tiles))
            finally:
                _CONTEXT = previous
            return results
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=init_worker,
                                 initargs=init_args) as pool:
            for result in pool.map(run_unit, units):
                results.append(result)
                advance(len(result[0].tiles))
    return results


def scores_per_seed(results: Sequence[UnitResult], n_seeds: int, n_params: int, level: str
                    ) -> tuple[list[list[list[ImageScore]]], list[int]]:
    """Reassemble unit results into ``scores[param][seed][image]`` and the image order.

    ``level`` "tile": images are tiles and the order holds their store indices; "image": images are the
    stitched source images and the order holds the index of their unit in ``results``.
    """
    scores: list[list[list[ImageScore]]] = [[[] for _ in range(n_seeds)] for _ in range(n_params)]
    order: list[int] = []
    for k, (unit, tile_scores, image_scores) in enumerate(results):
        if level == "tile":
            order.extend(unit.tiles)
            for s in range(n_seeds):
                for per_tile in tile_scores[s]:
                    for p in range(n_params):
                        scores[p][s].append(per_tile[p])
        elif image_scores is not None:
            order.append(k)
            for s in range(n_seeds):
                for p in range(n_params):
                    scores[p][s].append(image_scores[s][p])
    return scores, order
