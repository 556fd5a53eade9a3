"""A study's tables per dataset: the comparison (via :func:`embedstore.trainer.compare.compare`) and the gap.

The gap is a paired comparison across seeds: for every encoder-variant run and each headline metric, the
per-seed differences to the no-encoder baseline of the same dataset over the seeds both share,
``d_s = run_s - baseline_s``, summarised as mean, sample sd, n and a 95% Student-t interval
``mean ± t(0.975, n - 1) * sd / sqrt(n)``. Seed ``s`` of both runs trains on the same batches in the same
order (the data order depends on the data seed only), so pairing by seed removes the share of the spread
that the data order causes. Files: ``gap.csv`` (one row per run and metric) and ``gap.md``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstore.errors import EmbedstoreError
from embedstore.tables import write_csv
from embedstore.trainer.compare import HEADLINE, compare
from embedstore.trainer.run_folder import RunDir

#: Files :func:`write_dataset_tables` writes in its folder.
TABLE_FILES = ("comparison.csv", "comparison.md", "comparison.png", "gap.csv", "gap.md")
CONFIDENCE = 0.95


@dataclass(frozen=True)
class RunEntry:
    """One evaluated run of a dataset: its folder, table labels and whether it is the baseline."""

    path: Path
    encoder: str
    variant: str
    baseline: bool = False

    @property
    def label(self) -> str:
        """``encoder x variant``; the baseline is ``baseline`` (``baseline x <variant>`` when renamed)."""
        if self.baseline and self.variant == self.encoder:
            return self.encoder
        return f"{self.encoder} x {self.variant}"


@dataclass(frozen=True)
class Gap:
    """Paired difference (run - baseline) of one metric over ``n`` shared seeds; NaN where undefined."""

    n: int
    mean: float
    sd: float
    low: float
    high: float


def paired_gap(run: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]], key: str) -> Gap:
    """The gap of metric ``key`` between two runs' ``per_seed`` dicts (seed -> metrics).

    Seeds where either value is missing or NaN are left out. sd uses ddof 1; the interval needs n >= 2.
    """
    from scipy.stats import t

    diffs = []
    for seed in sorted(set(run) & set(baseline), key=str):
        a, b = run[seed].get(key), baseline[seed].get(key)
        if a is None or b is None or math.isnan(a) or math.isnan(b):
            continue
        diffs.append(float(a) - float(b))
    n = len(diffs)
    if n == 0:
        return Gap(0, math.nan, math.nan, math.nan, math.nan)
    values = np.asarray(diffs)
    mean = float(values.mean())
    if n == 1:
        return Gap(1, mean, math.nan, math.nan, math.nan)
    sd = float(values.std(ddof=1))
    half = float(t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
    return Gap(n, mean, sd, mean - half, mean + half)


def _per_seed(run: Path, split: str, level: str) -> dict[str, dict[str, float]]:
    path = RunDir(run).eval_metrics(split)
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise EmbedstoreError(f"{path}: unreadable metrics ({err})") from None
    return dict(report.get(level, {}).get("per_seed", {}))


def gap_rows(entries: list[RunEntry], split: str, level: str, keys: list[tuple[str, str]]
             ) -> list[dict[str, Any]]:
    """One row per (non-baseline run, metric): label, metric, n, mean difference, sd, 95% interval."""
    baselines = [e for e in entries if e.baseline]
    if len(baselines) != 1:
        raise EmbedstoreError(f"the gap needs exactly one baseline run, got {len(baselines)}")
    base = _per_seed(baselines[0].path, split, level)
    rows = []
    for entry in entries:
        if entry.baseline:
            continue
        seeds = _per_seed(entry.path, split, level)
        for key, header in keys:
            gap = paired_gap(seeds, base, key)
            rows.append({"label": entry.label, "encoder": entry.encoder, "variant": entry.variant,
                         "baseline": baselines[0].label, "metric": key, "header": header, "level": level,
                         "n": gap.n, "mean_diff": gap.mean, "sd": gap.sd, "ci95_low": gap.low,
                         "ci95_high": gap.high})
    return rows


def _gap_cell(row: dict[str, Any]) -> str:
    """``+0.031 ± 0.008 [+0.011, +0.051]`` (sd, then the 95% interval); "-" without a shared seed."""
    if row["n"] == 0:
        return "-"
    text = f"{row['mean_diff']:+.3f}"
    if not math.isnan(row["sd"]):
        text += f" ± {row['sd']:.3f} [{row['ci95_low']:+.3f}, {row['ci95_high']:+.3f}]"
    return text


def write_gap_markdown(rows: list[dict[str, Any]], path: Path, *, title: str, split: str, level: str) -> None:
    """One line per run, one column per metric: mean difference to the baseline ± sd [95% interval]."""
    headers = list(dict.fromkeys(r["header"] for r in rows))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    cells = {(r["label"], r["header"]): _gap_cell(r) for r in rows}
    n = max((r["n"] for r in rows), default=0)
    baseline = rows[0]["baseline"] if rows else "baseline"
    lines = [f"{title}: paired difference to `{baseline}` over {n} shared seeds (split `{split}`, {level} level): "
             f"mean ± sd [{CONFIDENCE:.0%} t interval].", "",
             "| run | " + " | ".join(headers) + " |", "|" + "---|" * (len(headers) + 1)]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(cells.get((label, h), "-") for h in headers) + " |")
    path.write_text("\n".join(lines) + "\n")


def write_dataset_tables(entries: list[RunEntry], folder: Path, *, split: str = "test", level: str = "auto",
                         title: str = "") -> dict[str, Path]:
    """Write the comparison (CSV, Markdown with the best marked, bar chart) and the gap tables of one dataset.

    Returns the paths by kind (``csv``, ``markdown``, ``png``, ``gap_csv``, ``gap_markdown``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    table = compare([e.path for e in entries], split=split, level=level, out=folder,
                    labels=[e.label for e in entries])
    keys = [(k, h) for k, h in HEADLINE if k in dict(table.columns)]
    rows = gap_rows(entries, split, table.level, keys)
    files = dict(table.files)
    files["gap_csv"], files["gap_markdown"] = folder / "gap.csv", folder / "gap.md"
    write_csv(files["gap_csv"], rows)
    write_gap_markdown(rows, files["gap_markdown"], title=title or folder.name, split=split, level=table.level)
    return files
