"""`embed evaluate`: score a trained run on a split of its store with every metric the dataset supports.

Pipeline. The split's tiles are cut into work units (:mod:`.units`: one shard-aligned block of tiles, or
all tiles of one source image when tiles come from larger images). A unit reads its features once,
decodes them with every seed's best checkpoint, post-processes each tile's maps
(:mod:`embedstore.trainer.postprocess.instances`) and scores each tile against ``labels/*``
(:mod:`.score`). Units run in a process pool (``workers``); each returns only small per-image score
records (:class:`ImageScore`), which the parent reduces per seed with :func:`summarize` (:mod:`.summary`).

Stitched images. Where tiles come from larger images (``samples/source_shape`` bigger than the tile),
the unit also blends the tiles' probability maps at their origins (:func:`.units.stitched_maps`),
post-processes the whole image once and scores it against the stitched ground truth
(:func:`stitch_labels`, :mod:`.stitch`), so cells cut by tile borders count once. Both tile-level and
image-level results are reported.

Protocols (named in metrics.json, :data:`PROTOCOLS`): binary PQ/DQ/SQ, AJI, AJI+ and Dice are computed
per image and averaged over the images whose ground truth has cells (as CISCA); detection precision,
recall and F1 (and HoVer-Net per-class F1) pool the centroid pairs over the set; CoNIC mPQ+ pools
TP/FP/FN/IoU per class over the set; PanNuke mPQ is reported averaged per image and per group (tissue);
R2 is CoNIC's multi-class R2 of per-image counts.

Outputs in ``<run>/eval_<split>/`` (:mod:`.outputs`): ``metrics.json`` (per seed, mean and sd over seeds,
protocols, post-processing variant and parameters, min-size tuning), ``tiles.csv`` (one row per tile),
``classes.csv`` (one row per class), and ``images.csv`` (one row per stitched image) when stitched.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstore.errors import EmbedstoreError
from embedstore.imaging.scale import parse_magnification
from embedstore.store import SampleTable, Store, open_store
from embedstore.trainer.evaluate.outputs import (
    CLASSES_TABLE,
    IMAGES_TABLE,
    TILES_TABLE,
    finite,
    write_classes_csv,
    write_images_csv,
    write_metrics_json,
    write_tiles_csv,
)
from embedstore.trainer.evaluate.score import ImageScore
from embedstore.trainer.evaluate.summary import PROTOCOLS, mean_sd, summarize
from embedstore.trainer.evaluate.units import WorkUnit, make_units, map_units, scores_per_seed
from embedstore.trainer.inference.maps import LoadedRun, load_run
from embedstore.trainer.metrics import detection_radius
from embedstore.trainer.postprocess import VARIANTS, PostprocessParams
from embedstore.trainer.run_folder import RunDir

#: Minimum-size grids of the reference's validation search (research notes §4).
MIN_SIZE_GRIDS = {20: (17, 20, 23, 26, 29, 32), 40: (50, 55, 60, 65, 70, 75, 80)}


def _check_split(store: Store, samples: SampleTable, split: str, key: str) -> tuple[np.ndarray, int]:
    """Committed tiles of ``split`` (view 0 done) and how many of its tiles are not extracted."""
    in_split = samples.indices(split)
    if in_split.size == 0:
        have = ", ".join(sorted(set(samples.split.tolist())))
        raise EmbedstoreError(f"{store.location}: split '{split}' has no tiles (the store has: {have})")
    done = np.asarray(store.features(key)["done"][:])[:, 0]
    tiles = in_split[done[in_split]]
    if tiles.size == 0:
        raise EmbedstoreError(f"{store.location}: features/{key} has no extracted tiles in split '{split}'; "
                              "run `embed extract`")
    return tiles, int(in_split.size - tiles.size)


def _stitchable(samples: SampleTable, tiles: np.ndarray, tile_size: int) -> bool:
    """Whether the split's tiles come from images larger than a tile."""
    return bool(np.any(samples.source_shape[tiles] > tile_size))


def min_size_grid(magnification: str | float) -> tuple[int, ...]:
    """The reference's validation grid for the minimum size: 20x grid below 30x, 40x grid above."""
    return MIN_SIZE_GRIDS[40 if parse_magnification(magnification) >= 30 else 20]


def _criterion(summary: dict[str, float], with_classes: bool) -> float:
    """What the min-size search maximises: mPQ+ with classes, else bPQ + detection F1 (reference §4)."""
    value = summary["mpq_plus"] if with_classes else summary["bpq"] + summary["det_f1"]
    return -math.inf if math.isnan(value) else value


@dataclass
class _Setup:
    loaded: LoadedRun
    store: Store
    samples: SampleTable
    names: list[str]
    magnification: str
    radius: float
    dataset: dict[str, Any]


def _setup(run: str | Path, store: str | Path | None, seeds: tuple[int, ...] | None) -> _Setup:
    """Load the run's decoders (refusing unknown seeds and missing checkpoints) and open its store."""
    loaded = load_run(run, seeds=seeds, device="cpu")
    location = str(store) if store is not None else loaded.store_location
    opened = open_store(location, mode="r")
    if loaded.run_config.encoder_fingerprint != opened.features(loaded.encoder_key).attrs.get("fingerprint"):
        raise EmbedstoreError(f"{location}: features/{loaded.encoder_key} were extracted with other encoder weights "
                              f"than run {run} was trained on")
    names = list(opened.classes) if loaded.n_types else []
    if loaded.n_types and (len(names) != loaded.n_types or "class" not in opened.group["labels"]):
        raise EmbedstoreError(f"{location}: the run predicts {loaded.n_types} classes but the store has "
                              f"{len(names)} (labels/class present: {'class' in opened.group['labels']})")
    dataset = dict(opened.dataset)
    magnification = str(dataset.get("magnification", "40x"))
    radius = detection_radius(float(dataset.get("um_per_px", 0.25)))
    return _Setup(loaded, opened, opened.samples(), names, magnification, radius, dataset)


def _tune_min_size(setup: _Setup, run: str | Path, variant: str, seeds: tuple[int, ...], device: str,
                   workers: int, batch_size: int, show_progress: bool) -> dict[str, Any]:
    """Pick the minimum size on the validation split from :func:`min_size_grid`."""
    split = setup.loaded.run_config.split_val
    tiles, _ = _check_split(setup.store, setup.samples, split, setup.loaded.encoder_key)
    grid = min_size_grid(setup.magnification)
    params = [PostprocessParams.for_dataset(setup.magnification, min_size=v, variant=variant,
                                            dataset_name=setup.dataset.get("name")) for v in grid]
    units = make_units(setup.samples, tiles, setup.store.tiles_per_shard, stitch=False)
    init = (str(run), setup.store.location, seeds, device, params, setup.radius, batch_size, 1)
    results = map_units(units, init, workers, show_progress, f"tune min size on {split}")
    scores, order = scores_per_seed(results, len(seeds), len(params), "tile")
    groups = list(setup.samples.group[order])
    values = {}
    for v, per_seed in zip(grid, scores):
        crits = [_criterion(summarize(s, groups, setup.names), bool(setup.names)) for s in per_seed]
        values[int(v)] = float(np.mean(crits))
    best = max(grid, key=lambda v: values[int(v)])  # first (smallest) of equal scores
    return {"split": split, "grid": [int(v) for v in grid], "criterion": "mpq_plus" if setup.names else "bpq + det_f1",
            "scores": {str(k): finite(v) for k, v in values.items()}, "chosen": int(best)}


def _level_report(per_seed_scores: list[list[ImageScore]], groups: list[str], names: list[str],
                  seeds: tuple[int, ...]) -> dict[str, Any]:
    """``per_seed``, ``mean`` and ``sd`` flat metric dicts of one level (tile or image)."""
    per_seed = [summarize(s, groups, names) for s in per_seed_scores]
    mean, sd = mean_sd(per_seed)
    return {"per_seed": {str(seed): m for seed, m in zip(seeds, per_seed)}, "mean": mean, "sd": sd}


def evaluate(run: str | Path, *, store: str | Path | None = None, split: str = "test", postprocess: str = "cisca",
             tune_min_size: bool = False, min_size: int | None = None, seeds: tuple[int, ...] | None = None,
             workers: int = 2, device: str = "auto", batch_size: int = 16, show_progress: bool = True
             ) -> dict[str, Any]:
    """Score every seed of a run on ``split`` and write ``<run>/eval_<split>/`` (see module docstring).

    Parameters
    ----------
    run : run folder of `embed train`.
    store : store to read (default: the one recorded in the run's config.json).
    split : split to score.
    postprocess : post-processing variant, one of :data:`VARIANTS` ("cisca" is the faithful default).
    tune_min_size : choose the minimum cell size on the run's validation split first.
    min_size : fixed minimum cell size (default: the dataset's, see ``postprocess.default_min_size``).
    seeds : subset of the run's seeds (default: all).
    workers : processes that predict, post-process and score in parallel (<= 1: this process).
    device : "auto", "cpu" or "cuda[:N]" for the decoders.
    batch_size : tiles per decoder forward.

    Returns
    -------
    The metrics.json content: ``tile`` (and ``image`` when stitched) each with ``per_seed``, ``mean``
    and ``sd`` flat metric dicts; protocols, post-processing and tuning records.

    Raises
    ------
    EmbedstoreError : no run, missing checkpoint, no such split or features, incompatible store.
    """
    from embedstore.device import resolve_device

    if postprocess not in VARIANTS:
        raise EmbedstoreError(f"--postprocess {postprocess}: expected one of {', '.join(VARIANTS)}")
    if tune_min_size and min_size is not None:
        raise EmbedstoreError("give either --min-size or --tune-min-size, not both")
    if min_size is not None and min_size < 0:
        raise EmbedstoreError(f"--min-size {min_size}: must be >= 0")
    started = time.perf_counter()
    setup = _setup(run, store, seeds)
    chosen_seeds = setup.loaded.seeds
    dev = str(resolve_device(device))
    tiles, missing = _check_split(setup.store, setup.samples, split, setup.loaded.encoder_key)
    tuning = None
    if tune_min_size:
        tuning = _tune_min_size(setup, run, postprocess, chosen_seeds, dev, workers, batch_size, show_progress)
        min_size = tuning["chosen"]
    params = PostprocessParams.for_dataset(setup.magnification, min_size=min_size, variant=postprocess,
                                           dataset_name=setup.dataset.get("name"))
    stitch = _stitchable(setup.samples, tiles, setup.store.tile_size)
    units = make_units(setup.samples, tiles, setup.store.tiles_per_shard, stitch)
    init = (str(run), setup.store.location, chosen_seeds, dev, [params], setup.radius, batch_size, 1)
    results = map_units(units, init, workers, show_progress, f"evaluate {Path(run).name} on {split}")

    report: dict[str, Any] = {
        "run": str(Path(run).resolve()), "store": setup.store.location, "split": split,
        "encoder_key": setup.loaded.encoder_key, "decoder": setup.loaded.models[0].cfg.preset,
        "levels": list(setup.loaded.levels),
        "dataset": {k: setup.dataset.get(k) for k in ("name", "magnification", "um_per_px", "classes")},
        "seeds": list(chosen_seeds), "n_tiles": int(tiles.size), "missing_tiles": missing,
        "postprocess": {"variant": postprocess, "params": asdict(params),
                        "min_size_from": "tuned" if tuning else "given" if min_size is not None else "default"},
        "min_size_tuning": tuning, "detection_radius_px": setup.radius, "protocols": PROTOCOLS,
        "classes": setup.names,
    }
    tile_scores, tile_order = scores_per_seed(results, len(chosen_seeds), 1, "tile")
    tile_groups = list(setup.samples.group[tile_order])
    report["tile"] = _level_report(tile_scores[0], tile_groups, setup.names, chosen_seeds)
    image_units: list[WorkUnit] = []
    image_groups: list[str] = []
    if stitch:
        image_scores, image_order = scores_per_seed(results, len(chosen_seeds), 1, "image")
        image_units = [results[k][0] for k in image_order]
        image_groups = [str(setup.samples.group[u.tiles[0]]) for u in image_units]
        report["image"] = _level_report(image_scores[0], image_groups, setup.names, chosen_seeds)
        report["image"]["sources"] = [u.source for u in image_units]
    report["seconds"] = time.perf_counter() - started
    report = finite(report)
    run_dir = RunDir(run)
    out = run_dir.eval_dir(split)
    out.mkdir(parents=True, exist_ok=True)
    write_metrics_json(run_dir.eval_metrics(split), report)
    write_tiles_csv(out / TILES_TABLE, setup.samples, tile_order, tile_scores[0], chosen_seeds)
    write_classes_csv(out / CLASSES_TABLE, report, "image" if stitch else "tile")
    if stitch:
        write_images_csv(out / IMAGES_TABLE, image_units, image_scores[0], chosen_seeds, image_groups)
    report["out"] = str(out)
    return report
