"""`embed bench postprocess`: post-processing milliseconds per 256 px tile on one core."""

from __future__ import annotations

import time

import numpy as np

from embedstore.datasets.synthetic import render
from embedstore.errors import EmbedstoreError
from embedstore.trainer.postprocess import PostprocessParams, instances_from_maps
from embedstore.trainer.targets.oracle import realistic_maps


def benchmark_postprocess(n_tiles: int = 64, variant: str = "cisca", magnification: str | float = "40x",
                          seed: int = 0) -> dict[str, float | int | str]:
    """Time :func:`instances_from_maps` on generated 256x256 tiles (the ``embed bench postprocess`` core).

    Tiles come from the seeded synthetic H&E generator (``embedstore.datasets.synthetic``), their
    exact targets turned into model-like maps by :func:`realistic_maps`; only the post-processing
    is timed, one tile at a time on the calling thread.

    Returns
    -------
    dict with ``ms_per_tile`` (mean wall time), ``ms_min`` (fastest tile), ``cpu_ms_per_tile``
    (mean CPU time of the calling thread: the figure to trust on a busy machine), ``n_tiles``,
    ``variant``, ``instances_per_tile`` (mean count found).
    """
    if n_tiles < 1:
        raise EmbedstoreError(f"benchmark n_tiles must be >= 1, got {n_tiles}")
    params = PostprocessParams.for_dataset(magnification, variant=variant)
    rng = np.random.default_rng(seed)
    maps = [realistic_maps(render("he", seed, i, 256)[1], magnification, rng) for i in range(n_tiles)]
    wall, cpu, counts = [], [], []
    for contour_prob, directions in maps:
        start, start_cpu = time.perf_counter(), time.thread_time()
        instances = instances_from_maps(contour_prob, directions, params)
        wall.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
        counts.append(int(instances.max()))
    return {"ms_per_tile": 1e3 * float(np.mean(wall)), "ms_min": 1e3 * float(np.min(wall)),
            "cpu_ms_per_tile": 1e3 * float(np.mean(cpu)), "n_tiles": n_tiles, "variant": variant,
            "instances_per_tile": float(np.mean(counts))}
