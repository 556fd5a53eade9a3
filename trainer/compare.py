"""`embed compare`: the paper-style table of evaluated runs (rows encoder x decoder, mean +- sd over seeds).

Reads each run's ``eval_<split>/metrics.json`` (written by :func:`embedstore.trainer.evaluate.evaluate`; paths
from :class:`~embedstore.trainer.run_folder.RunDir`); nothing is recomputed. Writes ``comparison.csv`` (one row
per run; every column's mean and sd, and ``best``: the columns where the run has the highest mean),
``comparison.md`` (mean +- sd cells, the best mean of each column in bold) and ``comparison.png`` (grouped
bars with sd error bars).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from embedstore.errors import EmbedstoreError
from embedstore.tables import write_csv
from embedstore.trainer.run_folder import RunDir

#: Headline columns in table order: (metrics.json key, header).
HEADLINE = (("bpq", "bPQ"), ("bdq", "DQ"), ("bsq", "SQ"), ("aji", "AJI"), ("mpq_image", "mPQ"),
            ("mpq_plus", "mPQ+"), ("det_f1", "F1"), ("r2", "R2"))
#: Columns drawn in the bar chart.
CHART = ("bpq", "aji", "mpq_image", "mpq_plus", "det_f1")
#: What ``level`` may be: "auto" picks "image" when every run has stitched results, else "tile".
LEVELS = ("auto", "tile", "image")


@dataclass
class ComparisonRow:
    """One evaluated run: its label (encoder x decoder), seeds, and metric mean / sd by metrics.json key."""

    run: str
    label: str
    encoder: str
    decoder: str
    n_seeds: int
    mean: dict[str, float | None]
    sd: dict[str, float | None]


@dataclass
class Comparison:
    """The comparison table: ``columns`` are (key, header) pairs shared by every row."""

    split: str
    level: str
    columns: list[tuple[str, str]]
    rows: list[ComparisonRow]
    files: dict[str, Path] = field(default_factory=dict)

    def cell(self, row: ComparisonRow, key: str, digits: int = 3) -> str:
        """``mean ± sd`` (just the mean for one seed; "-" when missing)."""
        m, s = row.mean.get(key), row.sd.get(key)
        if m is None:
            return "-"
        return f"{m:.{digits}f}" if s is None else f"{m:.{digits}f} ± {s:.{digits}f}"

    def best(self, key: str) -> set[int]:
        """Indices of the rows with the highest mean in column ``key`` (every metric here is higher-better);
        empty when fewer than two rows have a value or all values are equal (no row stands out)."""
        values = [(i, r.mean.get(key)) for i, r in enumerate(self.rows)]
        present = [(i, v) for i, v in values if v is not None and not math.isnan(v)]
        top = max((v for _, v in present), default=None)
        if len(present) < 2 or top == min(v for _, v in present):  # nothing to tell apart
            return set()
        return {i for i, v in present if v == top}

    def best_headers(self, index: int) -> list[str]:
        """Headers of the columns where row ``index`` is best."""
        return [h for k, h in self.columns if index in self.best(k)]


def _label(report: dict[str, Any]) -> str:
    """``encoder x decoder``, plus the levels read when they are not all four (``L23``, ``none``)."""
    label = f"{report['encoder_key']} x {report['decoder']}"
    levels = report.get("levels", [0, 1, 2, 3])
    if list(levels) != [0, 1, 2, 3]:
        label += f" L{''.join(map(str, levels))}" if levels else " none"
    return label


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run folders among ``paths``: a path holding config.json is a run, another folder is searched one level
    down (a runs directory).

    Raises
    ------
    EmbedstoreError : a path that does not exist, or no run found at all.
    """
    runs: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise EmbedstoreError(f"{p}: no such run or runs folder")
        if RunDir(p).is_run():
            runs.append(p)
        elif p.is_dir():
            runs.extend(sorted(c for c in p.iterdir() if RunDir(c).is_run()))
    if not runs:
        raise EmbedstoreError(f"no runs (folders with config.json) in {', '.join(map(str, paths))}")
    return runs


def _load_metrics(run: Path, split: str) -> dict[str, Any]:
    """The run's ``eval_<split>/metrics.json``; a missing or unreadable file is a user error."""
    path = RunDir(run).eval_metrics(split)
    if not path.is_file():
        raise EmbedstoreError(f"{run}: not evaluated on '{split}' (no {path}); run `embed evaluate {run} --split {split}`")
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as err:
        raise EmbedstoreError(f"{path}: unreadable metrics ({err})") from None


def compare(runs: list[str | Path] | str | Path, *, split: str = "test", level: str = "auto",
            out: str | Path | None = None, labels: Sequence[str] | None = None) -> Comparison:
    """Collect evaluated runs into one table and, with ``out``, write CSV, Markdown and a bar chart PNG there.

    Parameters
    ----------
    runs : run folders and/or folders of runs.
    split : the evaluated split to compare.
    level : "tile", "image" (stitched whole images) or "auto" (image when every run has it, else tile).
    out : folder for comparison.csv / .md / .png (created); None writes nothing.
    labels : one row label per run folder found (default: ``encoder x decoder`` from metrics.json).

    Raises
    ------
    EmbedstoreError : no runs, a run not evaluated on ``split``, or ``level`` "image" missing for a run.
    """
    if level not in LEVELS:
        raise EmbedstoreError(f"--level {level}: expected {', '.join(LEVELS[:-1])} or {LEVELS[-1]}")
    folders = find_runs([runs] if isinstance(runs, (str, Path)) else list(runs))
    if labels is not None and len(labels) != len(folders):
        raise EmbedstoreError(f"{len(labels)} labels for {len(folders)} runs")
    reports = [(run, _load_metrics(run, split)) for run in folders]
    if level == "auto":
        level = "image" if all(r.get("image") for _, r in reports) else "tile"
    rows = []
    for k, (run, report) in enumerate(reports):
        if not report.get(level):
            raise EmbedstoreError(f"{run}: eval_{split}/metrics.json has no '{level}' results (stitched images "
                                  "exist only for stores whose tiles come from larger images)")
        part = report[level]
        rows.append(ComparisonRow(run=str(run), label=_label(report) if labels is None else labels[k],
                                  encoder=report["encoder_key"], decoder=report["decoder"],
                                  n_seeds=len(report["seeds"]), mean=part["mean"], sd=part["sd"]))
    labels = [r.label for r in rows]
    for r in rows:
        if labels.count(r.label) > 1:
            r.label = f"{r.label} ({Path(r.run).name})"
    columns = _columns(rows)
    table = Comparison(split=split, level=level, columns=columns, rows=rows)
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        table.files = {"csv": folder / "comparison.csv", "markdown": folder / "comparison.md",
                       "png": folder / "comparison.png"}
        _write_csv(table, table.files["csv"])
        _write_markdown(table, table.files["markdown"])
        _write_chart(table, table.files["png"])
    return table


def _columns(rows: list[ComparisonRow]) -> list[tuple[str, str]]:
    """Headline columns any run has, then per-class PQ+ and F1 columns in the runs' class order."""
    present = {k for r in rows for k, v in r.mean.items() if v is not None}
    columns = [(k, h) for k, h in HEADLINE if k in present]
    classes = list(dict.fromkeys(k.split(".", 1)[1] for r in rows for k in r.mean if k.startswith("pq_plus.")))
    for prefix, header in (("pq_plus", "PQ+"), ("f1", "F1")):
        columns += [(f"{prefix}.{c}", f"{header} {c}") for c in classes if f"{prefix}.{c}" in present]
    return columns


def _write_csv(table: Comparison, path: Path) -> None:
    """One row per run: label, encoder, decoder, run, seeds, level, each column's mean and sd (empty: missing),
    then ``best``: the headers of the columns where the run is best, joined by ``;``."""
    rows = []
    for i, r in enumerate(table.rows):
        row: dict[str, Any] = {"label": r.label, "encoder": r.encoder, "decoder": r.decoder, "run": r.run,
                               "seeds": r.n_seeds, "level": table.level}
        for key, _ in table.columns:
            row[key], row[f"{key}_sd"] = r.mean.get(key), r.sd.get(key)
        row["best"] = ";".join(table.best_headers(i))
        rows.append(row)
    write_csv(path, rows)


def _write_markdown(table: Comparison, path: Path) -> None:
    header = ["encoder x decoder", "seeds", *(h for _, h in table.columns)]
    lines = [f"Split `{table.split}`, {table.level}-level metrics, mean ± sd over seeds; best mean of each "
             "column in bold.", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    best = {k: table.best(k) for k, _ in table.columns}
    for i, r in enumerate(table.rows):
        cells = [r.label, str(r.n_seeds),
                 *(f"**{table.cell(r, k)}**" if i in best[k] else table.cell(r, k) for k, _ in table.columns)]
        lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def _write_chart(table: Comparison, path: Path) -> None:
    """Grouped bars: one group per headline metric, one bar per run, sd as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [(k, h) for k, h in table.columns if k in CHART]
    n = max(len(table.rows), 1)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(keys) * max(1, n / 2)), 3.6))
    for i, r in enumerate(table.rows):
        means = [_num(r.mean.get(k)) for k, _ in keys]
        sds = [_num(r.sd.get(k), 0.0) for k, _ in keys]
        xs = [j - 0.4 + width * (i + 0.5) for j in range(len(keys))]
        ax.bar(xs, means, width, yerr=sds, capsize=3, label=r.label)
    ax.set_xticks(range(len(keys)), [h for _, h in keys])
    ax.set_ylim(0, 1)
    ax.set_ylabel("score (mean ± sd over seeds)")
    ax.set_title(f"{table.split} split, {table.level} level")
    ax.legend(fontsize="small", loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _num(value: float | None, missing: float = math.nan) -> float:
    return missing if value is None else float(value)
