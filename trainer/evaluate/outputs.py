"""The files of ``<run>/eval_<split>/``: metrics.json and the per-tile, per-image and per-class CSV tables.

Tables go through the package's one CSV writer (:func:`embedstore.tables.write_csv`: NaN as an empty cell,
replaced whole); JSON holds no NaN (:func:`finite`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedstore.store import SampleTable
from embedstore.tables import write_csv
from embedstore.trainer.evaluate.score import ImageScore
from embedstore.trainer.evaluate.units import WorkUnit
from embedstore.trainer.metrics.reductions import nanmean

#: Table names inside ``eval_<split>/`` (next to :meth:`RunDir.eval_metrics`).
TILES_TABLE, IMAGES_TABLE, CLASSES_TABLE = "tiles.csv", "images.csv", "classes.csv"
#: Per-image binary columns of tiles.csv and images.csv.
_IMAGE_COLUMNS = ("pq", "dq", "sq", "aji", "aji_plus", "dice")


def finite(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write_metrics_json(path: Path, report: dict[str, Any]) -> None:
    """``metrics.json``: the (already :func:`finite`) report, indented."""
    path.write_text(json.dumps(report, indent=1))


def _image_row(score: ImageScore) -> dict[str, float]:
    row = {k: score.binary[k] for k in _IMAGE_COLUMNS}
    row["n_pred"] = score.n_pred
    if score.pannuke is not None:
        row["mpq"] = float(score.pannuke["mpq"])
    return row


def _seed_columns(per_seed: list[dict[str, float]], seeds: Sequence[int]) -> dict[str, Any]:
    """Mean over seeds of each value, then each seed's value as ``<name>_seed<k>``."""
    out: dict[str, Any] = {}
    keys = list(per_seed[0])
    for k in keys:
        out[k] = nanmean([r[k] for r in per_seed])
    for seed, r in zip(seeds, per_seed):
        for k in keys:
            out[f"{k}_seed{seed}"] = r[k]
    return out


def write_tiles_csv(path: Path, samples: SampleTable, order: list[int], scores: list[list[ImageScore]],
                    seeds: Sequence[int]) -> None:
    """One row per tile: sample columns, n_true, then each metric's mean over seeds and per-seed values.

    ``scores[seed][i]`` belongs to store index ``order[i]``.
    """
    rows = []
    for i, tile in enumerate(order):
        row: dict[str, Any] = {"index": tile, "id": samples.id[tile], "group": samples.group[tile],
                               "source": samples.source[tile], "origin_y": int(samples.origin[tile][0]),
                               "origin_x": int(samples.origin[tile][1]), "n_true": scores[0][i].n_true}
        row.update(_seed_columns([_image_row(s[i]) for s in scores], seeds))
        rows.append(row)
    write_csv(path, rows)


def write_images_csv(path: Path, units: list[WorkUnit], scores: list[list[ImageScore]], seeds: Sequence[int],
                     groups: list[str]) -> None:
    """One row per stitched source image (``scores[seed][i]`` belongs to ``units[i]``)."""
    rows = []
    for i, unit in enumerate(units):
        row: dict[str, Any] = {"source": unit.source, "group": groups[i], "height": unit.shape[0],
                               "width": unit.shape[1], "tiles": len(unit.tiles), "n_true": scores[0][i].n_true}
        row.update(_seed_columns([_image_row(s[i]) for s in scores], seeds))
        rows.append(row)
    write_csv(path, rows)


def write_classes_csv(path: Path, report: dict[str, Any], level: str) -> None:
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
    write_csv(path, [{k: (math.nan if v is None else v) for k, v in r.items()} for r in rows])
