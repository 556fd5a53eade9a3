"""`embed bench evaluate`: the post-processing and scoring stage of `embed evaluate`, tiles per second."""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from embedstore.datasets.synthetic import render
from embedstore.errors import EmbedstoreError
from embedstore.trainer.evaluate import score_maps, summarize
from embedstore.trainer.evaluate.units import UnitResult, WorkUnit, scores_per_seed
from embedstore.trainer.inference.maps import TileMaps
from embedstore.trainer.metrics import detection_radius
from embedstore.trainer.postprocess import PostprocessParams
from embedstore.trainer.targets.oracle import realistic_maps

_BENCH: list[tuple[TileMaps, np.ndarray, np.ndarray]] = []
_BENCH_PARAMS: list[PostprocessParams] = []


def _bench_maps(n: int, seed: int = 0) -> list[tuple[TileMaps, np.ndarray, np.ndarray]]:
    """``n`` synthetic 256 px H&E tiles as model-like maps (``targets.oracle.realistic_maps``) plus their GT."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        _, inst, cls = render("he", seed, i, 256)
        contour, directions = realistic_maps(inst, "40x", rng)
        logits = 4.0 * (cls[None] == np.arange(4)[:, None, None]) + rng.standard_normal((4, 256, 256))
        types = np.exp(logits - logits.max(0))
        out.append((TileMaps(contour, directions, (types / types.sum(0)).astype(np.float32)), inst, cls))
    return out


def _init_bench(distinct: int, variant: str) -> None:
    """Worker initializer: build the (seeded, hence identical in every worker) maps once."""
    _BENCH[:] = _bench_maps(distinct)
    _BENCH_PARAMS[:] = [PostprocessParams.for_dataset("40x", variant=variant, dataset_name="synthetic")]


def _bench_unit(unit: WorkUnit) -> UnitResult:
    scores = []
    for t in unit.tiles:
        maps, inst, cls = _BENCH[t % len(_BENCH)]
        scores.append(score_maps(maps, inst, cls, _BENCH_PARAMS, 3, detection_radius(0.25)))
    return unit, [scores], None


def _worker_pid(_: int) -> int:
    time.sleep(0.05)
    return os.getpid()


def bench_evaluate(n_tiles: int = 1000, *, workers: int = 2, variant: str = "cisca", distinct: int = 16
                   ) -> dict[str, float | int | str]:
    """Time the post-processing and scoring stage of `embed evaluate` on ``n_tiles`` 256 px tiles.

    ``distinct`` synthetic H&E tiles (3 classes, 40x) are turned into model-like maps in each worker at
    start-up (not timed, reported as ``startup_seconds``); tile i reuses map ``i % distinct``, and every
    tile is post-processed and scored in full. The timed part is what evaluate's workers do after the
    decoder (post-processing, class voting, every per-image metric) plus the parent's set-level
    reduction (:func:`summarize`). The decoder forward is not included: it runs on the GPU in practice,
    and on a CPU its cost depends on the decoder preset.

    Returns
    -------
    dict with ``n_tiles``, ``workers``, ``variant``, ``seconds`` (timed wall clock), ``tiles_per_s``,
    ``seconds_per_1000`` (extrapolated linearly), ``startup_seconds`` and ``bpq`` (sanity).
    """
    if n_tiles < 1 or workers < 1 or distinct < 1:
        raise EmbedstoreError(f"bench evaluate: n_tiles ({n_tiles}), workers ({workers}) and distinct ({distinct}) "
                              "must be >= 1")
    units = [WorkUnit(tuple(range(s, min(s + 16, n_tiles)))) for s in range(0, n_tiles, 16)]
    begin = time.perf_counter()
    if workers == 1:
        _init_bench(distinct, variant)
        startup = time.perf_counter() - begin
        start = time.perf_counter()
        results = [_bench_unit(u) for u in units]
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_bench,
                                 initargs=(distinct, variant)) as pool:
            pids: set[int] = set()
            while len(pids) < workers:  # every worker has run its initializer
                pids.update(pool.map(_worker_pid, range(workers)))
            startup = time.perf_counter() - begin
            start = time.perf_counter()
            results = list(pool.map(_bench_unit, units))
    scores, order = scores_per_seed(results, 1, 1, "tile")
    summary = summarize(scores[0][0], ["synthetic"] * len(order), ("Epithelial", "Inflammatory", "Connective"))
    seconds = time.perf_counter() - start
    return {"n_tiles": n_tiles, "workers": workers, "variant": variant, "seconds": seconds,
            "tiles_per_s": n_tiles / seconds, "seconds_per_1000": 1000 * seconds / n_tiles,
            "startup_seconds": startup, "bpq": summary["bpq"]}
