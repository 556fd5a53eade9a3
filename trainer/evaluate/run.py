"""`embed evaluate`: score a trained run on a split of its store with every metric the dataset supports.

Pipeline. The split's tiles are cut into work units (one shard-aligned block of tiles, or all tiles of
one source image when tiles come from larger images). A unit reads its features once, decodes them with
every seed's best checkpoint, post-processes each tile's maps (:mod:`embedstore.trainer.postprocess.instances`)
and scores each tile against ``labels/*``. Units run in a process pool (``workers``); each returns only
small per-image score records (:class:`ImageScore`), which the parent reduces per seed with
:func:`summarize`.

Stitched images. Where tiles come from larger images (``samples/source_shape`` bigger than the tile),
the unit also averages the tiles' probability maps at their origins (:class:`MapBlender`), post-processes
the whole image once and scores it against the stitched ground truth (:func:`stitch_labels`), so cells
cut by tile borders count once. Both tile-level and image-level results are reported.

Protocols (named in metrics.json, :data:`PROTOCOLS`): binary PQ/DQ/SQ, AJI, AJI+ and Dice are computed
per image and averaged over the images whose ground truth has cells (as CISCA); detection precision,
recall and F1 (and HoVer-Net per-class F1) pool the centroid pairs over the set; CoNIC mPQ+ pools
TP/FP/FN/IoU per class over the set; PanNuke mPQ is reported averaged per image and per group (tissue);
R2 is CoNIC's multi-class R2 of per-image counts.

Outputs in ``<run>/eval_<split>/``: ``metrics.json`` (per seed, mean and sd over seeds, protocols,
post-processing variant and parameters, min-size tuning), ``tiles.csv`` (one row per tile),
``classes.csv`` (one row per class), and ``images.csv`` (one row per stitched image) when stitched.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstore.errors import EmbedstoreError
from embedstore.progress import progress_bar
from embedstore.store import SampleTable, Store, open_store
from embedstore.trainer.inference.maps import LoadedRun, MapBlender, TileMaps, load_run, predict_maps, read_tiles
from embedstore.trainer.metrics.instance_metrics import (
    aggregate_pannuke,
    aggregated_jaccard_index,
    aggregated_jaccard_index_plus,
    count_r2,
    detection_radius,
    dice,
    instance_centroids,
    instance_classes,
    match_centroids,
    panoptic_quality,
)
from embedstore.trainer.postprocess.instances import VARIANTS, PostprocessParams, classify_instances, instances_from_maps
from embedstore.imaging.scale import parse_magnification

#: What each family of numbers in metrics.json means (see the module docstring).
PROTOCOLS = {
    "binary": "bpq/bdq/bsq (IoU > 0.5 unique matching), aji, aji_plus, dice, pq_precision, pq_recall: per "
              "image, mean over images whose ground truth has cells (CISCA / HoVer-Net)",
    "detection": "det_precision/det_recall/det_f1: centroids paired by Hungarian matching within "
                 "3 um (12 px at 40x, 6 px at 20x), pairs pooled over the set; f1/precision/recall.<class>: "
                 "HoVer-Net per-class F1 on the pooled pairs",
    "pannuke": "mpq_image / bpq_image: PanNuke per-image PQ (class NaN when absent from the ground truth), "
               "mean over images (CISCA / CellViT logs); mpq_group / bpq_group: mean per group (tissue) "
               "then over groups (PanNuke-metrics official protocol); pq.<class>: per-class image mean",
    "conic": "mpq_plus, pq_plus/dq_plus/sq_plus.<class>: CoNIC mPQ+, TP/FP/FN/IoU pooled per class over the set",
    "counts": "r2: CoNIC multi-class R2 of per-image instance counts (mean over classes; binary count R2 "
              "without classes); r2_binary: R2 of total counts; r2.<class>: per class",
}
#: Minimum-size grids of the reference's validation search (research notes §4).
MIN_SIZE_GRIDS = {20: (17, 20, 23, 26, 29, 32), 40: (50, 55, 60, 65, 70, 75, 80)}


# ----------------------------------------------------------------------------------------------
# scoring one image


@dataclass
class ImageScore:
    """Every per-image number the set-level metrics need (small: no pixel maps).

    Attributes
    ----------
    n_true, n_pred : instance counts.
    binary : ``panoptic_quality`` output plus ``aji``, ``aji_plus``, ``dice``.
    pannuke : ``pannuke_pq`` output (None without classes).
    class_counts : (4, C) float64 rows TP, FP, FN, IoU sum per class (CoNIC matching); (4, 0) without classes.
    detection : class ids (int64) of paired GT, paired predictions, unpaired GT and unpaired predictions
        (all 0 without classes).
    true_counts, pred_counts : (C,) instance counts per class ((1,) total without classes).
    """

    n_true: int
    n_pred: int
    binary: dict[str, float]
    pannuke: dict[str, Any] | None
    class_counts: np.ndarray
    detection: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    true_counts: np.ndarray
    pred_counts: np.ndarray


def score_image(true_inst: np.ndarray, true_cls: np.ndarray | None, pred_inst: np.ndarray,
                pred_cls: np.ndarray | None, n_classes: int, radius: float) -> ImageScore:
    """Score one predicted instance (and class) map against the ground truth.

    Parameters
    ----------
    true_inst, pred_inst : (H, W) integer instance maps, 0 = background.
    true_cls, pred_cls : (H, W) integer class maps (1..n_classes), or None when ``n_classes == 0``.
    n_classes : number of cell classes (0 = binary).
    radius : detection pairing radius in pixels (:func:`detection_radius`).
    """
    binary: dict[str, float] = dict(panoptic_quality(true_inst, pred_inst))
    binary["aji"] = aggregated_jaccard_index(true_inst, pred_inst)
    binary["aji_plus"] = aggregated_jaccard_index_plus(true_inst, pred_inst)
    binary["dice"] = dice(true_inst, pred_inst)
    _, t_xy = instance_centroids(true_inst)
    _, p_xy = instance_centroids(pred_inst)
    pairs, lone_t, lone_p = match_centroids(t_xy, p_xy, radius)
    if n_classes > 0:
        if true_cls is None or pred_cls is None:
            raise ValueError("score_image needs class maps when n_classes > 0")
        pannuke, class_counts = _per_class_pq(true_inst, true_cls, pred_inst, pred_cls, n_classes, binary)
        _, t_cls = instance_classes(true_inst, true_cls)
        _, p_cls = instance_classes(pred_inst, pred_cls)
        true_counts = np.bincount(t_cls, minlength=n_classes + 1)[1:n_classes + 1]
        pred_counts = np.bincount(p_cls, minlength=n_classes + 1)[1:n_classes + 1]
    else:
        pannuke = None
        class_counts = np.zeros((4, 0))
        t_cls, p_cls = np.zeros(len(t_xy), np.int64), np.zeros(len(p_xy), np.int64)
        true_counts, pred_counts = np.array([len(t_xy)]), np.array([len(p_xy)])
    detection = (t_cls[pairs[:, 0]], p_cls[pairs[:, 1]], t_cls[lone_t], p_cls[lone_p])
    return ImageScore(n_true=len(t_xy), n_pred=len(p_xy), binary=binary, pannuke=pannuke,
                      class_counts=class_counts, detection=detection,
                      true_counts=true_counts.astype(np.int64), pred_counts=pred_counts.astype(np.int64))


def _per_class_pq(true_inst: np.ndarray, true_cls: np.ndarray, pred_inst: np.ndarray, pred_cls: np.ndarray,
                  n_classes: int, binary: dict[str, float]) -> tuple[dict[str, Any], np.ndarray]:
    """``pannuke_pq``'s result and ``conic_mpq_plus``'s (4, C) TP/FP/FN/IoU counts from one matching per class.

    Both restrict the instance maps to one class's pixels and match them the same way; computing the
    matching once halves the cost of typed scoring (tests check equality with the two functions).
    """
    per_class = np.full((3, n_classes), np.nan)
    counts = np.zeros((4, n_classes))
    for c in range(1, n_classes + 1):
        t = np.where(true_cls == c, true_inst, 0)
        p = np.where(pred_cls == c, pred_inst, 0)
        has_true = bool(t.any())
        if not has_true and not p.any():
            continue
        r = panoptic_quality(t, p)
        counts[:, c - 1] = r["tp"], r["fp"], r["fn"], r["iou_sum"]
        if has_true:
            per_class[:, c - 1] = r["pq"], r["dq"], r["sq"]
    gt_empty = not true_inst.any()
    pannuke: dict[str, Any] = {f"b{k}": math.nan if gt_empty else binary[k] for k in ("pq", "dq", "sq")}
    for row, key in zip(per_class, ("pq", "dq", "sq")):
        pannuke[key] = row
        pannuke[f"m{key}"] = _nanmean(row)
    return pannuke, counts


def predict_instances(maps: TileMaps, params: PostprocessParams) -> tuple[np.ndarray, np.ndarray | None]:
    """Post-process one image's maps: (H, W) int32 instances and (H, W) uint8 classes (None without types)."""
    instances = instances_from_maps(maps.contour, maps.directions, params)
    if maps.types is None:
        return instances, None
    return instances, classify_instances(instances, maps.types)[0]


def score_maps(maps: TileMaps, true_inst: np.ndarray, true_cls: np.ndarray | None,
               params: Sequence[PostprocessParams], n_classes: int, radius: float) -> list[ImageScore]:
    """Post-process ``maps`` with each parameter set and score the result: one :class:`ImageScore` each."""
    scores = []
    for p in params:
        inst, cls = predict_instances(maps, p)
        scores.append(score_image(true_inst, true_cls if n_classes else None, inst,
                                  cls if n_classes else None, n_classes, radius))
    return scores


# ----------------------------------------------------------------------------------------------
# set-level reduction


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _pooled_pq(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DQ, SQ, PQ per class from pooled (4, C) TP, FP, FN, IoU sums (as ``conic_mpq_plus``)."""
    tp, fp, fn, iou = counts
    denom = tp + 0.5 * fp + 0.5 * fn
    with np.errstate(invalid="ignore", divide="ignore"):
        dq = np.where(denom > 0, tp / denom, np.nan)
        sq = np.where(tp > 0, iou / np.maximum(tp, 1), np.where(denom > 0, 0.0, np.nan))
    return dq, sq, dq * sq


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else math.nan


def _detection(scores: Sequence[ImageScore], n_classes: int, names: Sequence[str]) -> dict[str, float]:
    """Pooled detection P/R/F1 and HoVer-Net per-class F1 (the formulas of ``metrics.detection_f1``)."""
    pt, pp, ut, up = (np.concatenate([s.detection[k] for s in scores]) for k in range(4))
    tp, fp, fn = pt.size, up.size, ut.size
    out = {"det_precision": _ratio(tp, tp + fp), "det_recall": _ratio(tp, tp + fn),
           "det_f1": _ratio(2 * tp, 2 * tp + fp + fn)}
    if n_classes > 0:
        out["type_accuracy"] = _ratio(int((pt == pp).sum()), tp)
        for c, name in enumerate(names, start=1):
            tp_c = int(((pt == c) & (pp == c)).sum())
            fp_c = int(((pt != c) & (pp == c)).sum())
            fn_c = int(((pt == c) & (pp != c)).sum())
            fp_d, fn_d = int((up == c).sum()), int((ut == c).sum())
            out[f"f1.{name}"] = _ratio(2 * tp_c, 2 * tp_c + 2 * fp_c + 2 * fn_c + fp_d + fn_d)
            out[f"precision.{name}"] = _ratio(tp_c, tp_c + 2 * fp_c + fp_d)
            out[f"recall.{name}"] = _ratio(tp_c, tp_c + 2 * fn_c + fn_d)
    return out


def summarize(scores: Sequence[ImageScore], groups: Sequence[str], class_names: Sequence[str]) -> dict[str, float]:
    """Set-level metrics of one seed: a flat ``{name: float}`` dict (per-class keys ``<metric>.<class>``).

    Parameters
    ----------
    scores : one :class:`ImageScore` per image of the set.
    groups : group (tissue / source) of each image, for the PanNuke per-group protocol.
    class_names : names of classes 1..C (empty for a binary run).

    See :data:`PROTOCOLS` for what each number means.
    """
    if len(scores) != len(groups):
        raise ValueError(f"{len(scores)} scores but {len(groups)} groups")
    names = list(class_names)
    with_cells = [s for s in scores if s.n_true > 0]
    out: dict[str, float] = {"n_images": float(len(scores)), "n_images_scored": float(len(with_cells)),
                             "n_true": float(sum(s.n_true for s in scores)),
                             "n_pred": float(sum(s.n_pred for s in scores))}
    for key, name in (("pq", "bpq"), ("dq", "bdq"), ("sq", "bsq"), ("aji", "aji"), ("aji_plus", "aji_plus"),
                      ("dice", "dice")):
        out[name] = _nanmean([s.binary[key] for s in with_cells])
    out["pq_precision"] = _nanmean([_ratio(s.binary["tp"], s.binary["tp"] + s.binary["fp"]) for s in with_cells])
    out["pq_recall"] = _nanmean([_ratio(s.binary["tp"], s.binary["tp"] + s.binary["fn"]) for s in with_cells])
    out.update(_detection(scores, len(names), names))
    true_counts = np.stack([s.true_counts for s in scores])
    pred_counts = np.stack([s.pred_counts for s in scores])
    r2 = count_r2(true_counts, pred_counts)
    out["r2"] = r2["r2"]
    out["r2_binary"] = count_r2(true_counts.sum(1), pred_counts.sum(1))["r2"]
    if names:
        for name, value in zip(names, r2["r2_per_class"]):
            out[f"r2.{name}"] = float(value)
        pannuke = aggregate_pannuke([s.pannuke for s in scores], list(groups))
        out["mpq_image"] = pannuke["image_mean"]["mpq"]
        out["bpq_image"] = pannuke["image_mean"]["bpq"]
        for key in ("mpq", "bpq"):
            out[f"{key}_group"] = pannuke["tissue_mean"][key]
            out[f"{key}_group_sd"] = pannuke["tissue_mean"][f"{key}_std"]
        for name, value in zip(names, pannuke["image_mean"]["pq"]):
            out[f"pq.{name}"] = float(value)
        dq, sq, pq = _pooled_pq(np.sum([s.class_counts for s in scores], axis=0))
        out["mpq_plus"] = _nanmean(pq)
        for name, d, s, p in zip(names, dq, sq, pq):
            out[f"pq_plus.{name}"], out[f"dq_plus.{name}"], out[f"sq_plus.{name}"] = float(p), float(d), float(s)
    return {k: float(v) for k, v in out.items()}


def mean_sd(per_seed: Sequence[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and sample sd (ddof 1; NaN for one seed) of every metric over seeds, ignoring NaN values."""
    keys = list(dict.fromkeys(k for d in per_seed for k in d))
    mean, sd = {}, {}
    for k in keys:
        values = np.array([d.get(k, math.nan) for d in per_seed], dtype=np.float64)
        values = values[~np.isnan(values)]
        mean[k] = float(values.mean()) if values.size else math.nan
        sd[k] = float(values.std(ddof=1)) if values.size > 1 else math.nan
    return mean, sd


# ----------------------------------------------------------------------------------------------
# stitched ground truth


def _touching_pairs(labels: np.ndarray) -> np.ndarray:
    """(K, 2) pairs of different non-zero ids that are 8-neighbours in ``labels``."""
    pairs = []
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :]),
                 (labels[:-1, :-1], labels[1:, 1:]), (labels[:-1, 1:], labels[1:, :-1])):
        hit = (a > 0) & (b > 0) & (a != b)
        pairs.append(np.stack([a[hit], b[hit]], 1))
    return np.concatenate(pairs)


class _Components:
    """Union-find over tile-instance ids where some pairs must stay apart (cannot-link)."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)
        self.apart: dict[int, set[int]] = {}

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = int(self.parent[root])
        while self.parent[x] != root:
            self.parent[x], x = root, int(self.parent[x])
        return root

    def keep_apart(self, a: int, b: int) -> None:
        """Record that a and b are different cells (call after the certain unions)."""
        self.apart.setdefault(self.find(a), set()).add(b)
        self.apart.setdefault(self.find(b), set()).add(a)

    def union(self, a: int, b: int, check: bool) -> None:
        """Join the components of a and b unless ``check`` and a member of one must stay apart from the other."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if check and any(self.find(x) == rb for x in self.apart.get(ra, ())):
            return
        self.parent[rb] = ra
        self.apart.setdefault(ra, set()).update(self.apart.pop(rb, set()))


def stitch_labels(instances: Sequence[np.ndarray], origins: Sequence[tuple[int, int]], shape: tuple[int, int],
                  classes: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Rebuild a source image's instance (and class) map from its tiles' per-tile labels.

    Tile ids are local (1..n per tile, each id one 8-connected piece), so cells are found as connected
    components of a graph of tile instances. Edges: (a) two overlapping tiles give the same pixel to two
    tile instances: one cell, always joined; (b) two tile instances are 4-neighbours across a seam between
    tiles that do not overlap there (a cell cut by a tile border): joined in decreasing order of their
    contact length, unless that would join two instances known to be different cells (different ids
    touching inside one tile). The result is relabelled 1..n by 8-connected pieces of one id in raster
    order (as ``datasets.tiling.relabel``), so with overlapping tiles it equals the relabelled source labels.
    Limit of (b): two different cells that touch only across a seam, with no tile overlap and no other
    evidence, are joined, and a cell may stay cut where joining it conflicts with a wrong earlier join.
    On CoNSeP's 37 images tiled at 256 px (seams at 256 and 512 without overlap) this rebuilds 20,912
    cells with 5 wrong joins and 4 cells left cut; with overlapping tiles it is exact.

    Parameters
    ----------
    instances : per tile (S, S) integer instance maps, 0 = background.
    origins : (y, x) of each tile in the image.
    shape : (H, W) of the image; tiles may stick out of it (zero-padded border tiles).
    classes : optional per tile (S, S) class maps, pasted as they are.

    Returns
    -------
    (H, W) int32 instance map and (H, W) uint8 class map (None without ``classes``).
    """
    from embedstore.imaging.tiling import relabel

    h, w = int(shape[0]), int(shape[1])
    ids = np.zeros((h, w), np.int64)
    cls = np.zeros((h, w), np.uint8) if classes is not None else None
    cover_h = np.zeros((h, max(w - 1, 0)), bool)  # some tile covers both (y, x) and (y, x + 1)
    cover_v = np.zeros((max(h - 1, 0), w), bool)  # some tile covers both (y, x) and (y + 1, x)
    same: list[np.ndarray] = []
    apart: list[np.ndarray] = []
    offset = 0
    for k, (tile, (y, x)) in enumerate(zip(instances, origins)):
        th, tw = min(tile.shape[0], h - y), min(tile.shape[1], w - x)
        local = np.asarray(tile[:th, :tw], np.int64)
        glob = np.where(local > 0, local + offset, 0)
        window = ids[y:y + th, x:x + tw]
        both = (window > 0) & (glob > 0)
        same.append(np.stack([window[both], glob[both]], 1))
        apart.append(_touching_pairs(glob))
        np.copyto(window, glob, where=glob > 0)
        if cls is not None:
            np.copyto(cls[y:y + th, x:x + tw], np.asarray(classes[k][:th, :tw], np.uint8), where=local > 0)
        cover_h[y:y + th, x:x + tw - 1] = True
        cover_v[y:y + th - 1, x:x + tw] = True
        offset += int(local.max(initial=0))
    seams = []
    for a, b, covered in ((ids[:, :-1], ids[:, 1:], cover_h), (ids[:-1, :], ids[1:, :], cover_v)):
        hit = (a > 0) & (b > 0) & (a != b) & ~covered
        seams.append(np.sort(np.stack([a[hit], b[hit]], 1), axis=1))
    components = _Components(offset + 1)
    for a, b in np.unique(np.concatenate(same), axis=0):
        components.union(int(a), int(b), check=False)
    for a, b in np.concatenate(apart):
        components.keep_apart(int(a), int(b))
    pairs, contact = np.unique(np.concatenate(seams), axis=0, return_counts=True)
    for k in np.argsort(-contact, kind="stable"):
        components.union(int(pairs[k, 0]), int(pairs[k, 1]), check=True)
    roots = np.array([components.find(i) for i in range(offset + 1)])
    return relabel(np.where(ids > 0, roots[ids], 0)), cls


# ----------------------------------------------------------------------------------------------
# work units (run in worker processes)


@dataclass(frozen=True)
class _Unit:
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


def _init_worker(run: str, store: str, seeds: tuple[int, ...], device: str, params: list[PostprocessParams],
                 radius: float, batch_size: int, threads: int) -> None:
    """Pool initializer: one torch thread per process (the pool is the parallelism), load the run once."""
    import torch

    global _CONTEXT
    if threads > 0:
        torch.set_num_threads(threads)
    loaded = load_run(run, seeds=seeds, device=device)
    _CONTEXT = _Context(open_store(store, mode="r"), loaded, params, loaded.n_types, radius, batch_size)


def _run_unit(unit: _Unit) -> tuple[_Unit, list[list[list[ImageScore]]], list[list[ImageScore]] | None]:
    """Predict, post-process and score one unit: ``tile[seed][tile][param]`` and ``image[seed][param]``."""
    ctx = _CONTEXT
    assert ctx is not None, "worker not initialised"
    index = np.array(unit.tiles, np.int64)
    span = slice(int(index[0]), int(index[-1]) + 1)
    rows = index - span.start
    true_inst = np.asarray(ctx.store.group["labels/instance"][span])[rows]
    true_cls = np.asarray(ctx.store.group["labels/class"][span])[rows] if ctx.n_classes else None
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
        image_scores = []
        for seed_maps in maps:
            blender = MapBlender(unit.shape, ctx.n_classes)
            for tm, origin in zip(seed_maps, origins):
                blender.add(tm, origin)
            image_scores.append(score_maps(blender.result(), gt_inst, gt_cls, ctx.params, ctx.n_classes,
                                           ctx.radius))
    return unit, tile_scores, image_scores


def _units(samples: SampleTable, tiles: np.ndarray, per_block: int, stitch: bool) -> list[_Unit]:
    """Work units: whole source images when stitching, else shard-aligned blocks of tiles.

    A source with tiles whose features are not extracted yet is scored per tile only (no ``shape``).
    """
    if not stitch:
        blocks = tiles // per_block
        return [_Unit(tuple(int(t) for t in tiles[blocks == b])) for b in np.unique(blocks)]
    units = []
    for source in dict.fromkeys(samples.source[tiles].tolist()):
        members = tiles[samples.source[tiles] == source]
        complete = members.size == int(np.sum(samples.source == source))
        shape = tuple(int(v) for v in samples.source_shape[members[0]]) if complete else None
        units.append(_Unit(tuple(int(t) for t in members), str(source), shape))
    return units


def _map_units(units: list[_Unit], init_args: tuple[Any, ...], workers: int, show_progress: bool, label: str
               ) -> list[Any]:
    """Score the units in a spawn process pool (or in this process for ``workers <= 1``), in unit order."""
    total = sum(len(u.tiles) for u in units)
    results = []
    with progress_bar(label, total=total, unit="tiles", enabled=show_progress) as advance:
        if workers <= 1:
            global _CONTEXT
            previous = _CONTEXT
            _init_worker(*init_args[:-1], 0)  # keep the caller's torch thread count
            try:
                for unit in units:
                    results.append(_run_unit(unit))
                    advance(len(unit.tiles))
            finally:
                _CONTEXT = previous
            return results
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                 initargs=init_args) as pool:
            for result in pool.map(_run_unit, units):
                results.append(result)
                advance(len(result[0].tiles))
    return results


# ----------------------------------------------------------------------------------------------
# evaluate


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
    if loaded.config.get("encoder_fingerprint") != opened.features(loaded.encoder_key).attrs.get("fingerprint"):
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


def _scores_per_seed(results: list[Any], n_seeds: int, n_params: int, level: str
                     ) -> tuple[list[list[list[ImageScore]]], list[int]]:
    """Reassemble unit results into ``scores[param][seed][image]`` and the image order (tile or unit index)."""
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


def _tune_min_size(setup: _Setup, run: str | Path, variant: str, seeds: tuple[int, ...], device: str,
                   workers: int, batch_size: int, show_progress: bool) -> dict[str, Any]:
    """Pick the minimum size on the validation split from :func:`min_size_grid`."""
    split = str(setup.loaded.config.get("split_val", "val"))
    tiles, _ = _check_split(setup.store, setup.samples, split, setup.loaded.encoder_key)
    grid = min_size_grid(setup.magnification)
    params = [PostprocessParams.for_dataset(setup.magnification, min_size=v, variant=variant,
                                            dataset_name=setup.dataset.get("name")) for v in grid]
    units = _units(setup.samples, tiles, setup.store.tiles_per_shard, stitch=False)
    init = (str(run), setup.store.location, seeds, device, params, setup.radius, batch_size, 1)
    results = _map_units(units, init, workers, show_progress, f"tune min size on {split}")
    scores, order = _scores_per_seed(results, len(seeds), len(params), "tile")
    groups = list(setup.samples.group[order])
    values = {}
    for v, per_seed in zip(grid, scores):
        crits = [_criterion(summarize(s, groups, setup.names), bool(setup.names)) for s in per_seed]
        values[int(v)] = float(np.mean(crits))
    best = max(grid, key=lambda v: values[int(v)])  # first (smallest) of equal scores
    return {"split": split, "grid": [int(v) for v in grid], "criterion": "mpq_plus" if setup.names else "bpq + det_f1",
            "scores": {str(k): _finite(v) for k, v in values.items()}, "chosen": int(best)}


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
    units = _units(setup.samples, tiles, setup.store.tiles_per_shard, stitch)
    init = (str(run), setup.store.location, chosen_seeds, dev, [params], setup.radius, batch_size, 1)
    results = _map_units(units, init, workers, show_progress, f"evaluate {Path(run).name} on {split}")

    report: dict[str, Any] = {
        "run": str(Path(run).resolve()), "store": setup.store.location, "split": split,
        "encoder_key": setup.loaded.encoder_key, "decoder": setup.loaded.models[0].cfg.preset,
        "dataset": {k: setup.dataset.get(k) for k in ("name", "magnification", "um_per_px", "classes")},
        "seeds": list(chosen_seeds), "n_tiles": int(tiles.size), "missing_tiles": missing,
        "postprocess": {"variant": postprocess, "params": asdict(params),
                        "min_size_from": "tuned" if tuning else "given" if min_size is not None else "default"},
        "min_size_tuning": tuning, "detection_radius_px": setup.radius, "protocols": PROTOCOLS,
        "classes": setup.names,
    }
    tile_scores, tile_order = _scores_per_seed(results, len(chosen_seeds), 1, "tile")
    tile_groups = list(setup.samples.group[tile_order])
    report["tile"] = _level_report(tile_scores[0], tile_groups, setup.names, chosen_seeds)
    image_units: list[_Unit] = []
    if stitch:
        image_scores, image_order = _scores_per_seed(results, len(chosen_seeds), 1, "image")
        image_units = [results[k][0] for k in image_order]
        image_groups = [str(setup.samples.group[u.tiles[0]]) for u in image_units]
        report["image"] = _level_report(image_scores[0], image_groups, setup.names, chosen_seeds)
        report["image"]["sources"] = [u.source for u in image_units]
    report["seconds"] = time.perf_counter() - started
    report = _finite(report)
    out = Path(run) / f"eval_{split}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=1))
    _write_tiles_csv(out / "tiles.csv", setup.samples, tile_order, tile_scores[0], chosen_seeds)
    _write_classes_csv(out / "classes.csv", report, "image" if stitch else "tile")
    if stitch:
        _write_images_csv(out / "images.csv", image_units, image_scores[0], chosen_seeds,
                          [str(setup.samples.group[u.tiles[0]]) for u in image_units])
    report["out"] = str(out)
    return report


def _level_report(per_seed_scores: list[list[ImageScore]], groups: list[str], names: list[str],
                  seeds: tuple[int, ...]) -> dict[str, Any]:
    per_seed = [summarize(s, groups, names) for s in per_seed_scores]
    mean, sd = mean_sd(per_seed)
    return {"per_seed": {str(seed): m for seed, m in zip(seeds, per_seed)}, "mean": mean, "sd": sd}


def _finite(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------
# CSV tables

_TILE_COLUMNS = ("pq", "dq", "sq", "aji", "aji_plus", "dice")


def _image_row(score: ImageScore) -> dict[str, float]:
    row = {k: score.binary[k] for k in _TILE_COLUMNS}
    row["n_pred"] = score.n_pred
    if score.pannuke is not None:
        row["mpq"] = float(score.pannuke["mpq"])
    return row


def _seed_columns(per_seed: list[dict[str, float]], seeds: tuple[int, ...]) -> dict[str, Any]:
    """Mean over seeds of each value, then each seed's value as ``<name>_seed<k>``."""
    out: dict[str, Any] = {}
    keys = list(per_seed[0])
    for k in keys:
        values = np.array([r[k] for r in per_seed], dtype=np.float64)
        out[k] = _nanmean(values)
    for seed, r in zip(seeds, per_seed):
        for k in keys:
            out[f"{k}_seed{seed}"] = r[k]
    return out


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})


def _write_tiles_csv(path: Path, samples: SampleTable, order: list[int], scores: list[list[ImageScore]],
                     seeds: tuple[int, ...]) -> None:
    """One row per tile: sample columns, n_true, then each metric's mean over seeds and per-seed values."""
    rows = []
    for i, tile in enumerate(order):
        row: dict[str, Any] = {"index": tile, "id": samples.id[tile], "group": samples.group[tile],
                               "source": samples.source[tile], "origin_y": int(samples.origin[tile][0]),
                               "origin_x": int(samples.origin[tile][1]), "n_true": scores[0][i].n_true}
        row.update(_seed_columns([_image_row(s[i]) for s in scores], seeds))
        rows.append(row)
    _write_rows(path, rows)


def _write_images_csv(path: Path, units: list[_Unit], scores: list[list[ImageScore]], seeds: tuple[int, ...],
                      groups: list[str]) -> None:
    rows = []
    for i, unit in enumerate(units):
        row: dict[str, Any] = {"source": unit.source, "group": groups[i], "height": unit.shape[0],
                               "width": unit.shape[1], "tiles": len(unit.tiles), "n_true": scores[0][i].n_true}
        row.update(_seed_columns([_image_row(s[i]) for s in scores], seeds))
        rows.append(row)
    _write_rows(path, rows)


def _write_classes_csv(path: Path, report: dict[str, Any], level: str) -> None:
    """One row per class (one row "cell" for a binary run): pooled PQ+, image-mean PQ, F1, R2, mean and sd."""
    mean, sd = report[level]["mean"], report[level]["sd"]
    names = report["classes"]
    rows = []
    if names:
        for name in names:
            row: dict[str, Any] = {"class": name, "level": level}
            for key in ("pq_plus", "dq_plus", "sq_plus", "pq", "f1", "precision", "recall", "r2"):
                row[key], row[f"{key}_sd"] = mean.get(f"{key}.{name}"), sd.get(f"{key}.{name}")
            rows.append(row)
    else:
        row = {"class": "cell", "level": level}
        for key, src in (("pq", "bpq"), ("f1", "det_f1"), ("precision", "det_precision"),
                         ("recall", "det_recall"), ("r2", "r2")):
            row[key], row[f"{key}_sd"] = mean.get(src), sd.get(src)
        rows.append(row)
    _write_rows(path, [{k: (math.nan if v is None else v) for k, v in r.items()} for r in rows])
