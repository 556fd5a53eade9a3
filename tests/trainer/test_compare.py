"""`compare`: the paper-style table of evaluated runs as CSV, Markdown and a bar chart."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from embedstore.errors import EmbedstoreError
from embedstore.extract.pipeline import extract_into_store
from embedstore.trainer.compare import compare, find_runs
from embedstore.trainer.evaluate import evaluate
from embedstore.trainer.fit.train import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder with two evaluated runs: a real lite run and a copy relabelled as a cisca decoder."""
    root = tmp_path_factory.mktemp("compare")
    store = root / "s.zarr"
    extract_into_store(store, "tiny-vit", dataset="synthetic", options={"n": 10}, tile_size=64, weights="random",
                       device="cpu", show_progress=False)
    train(store, seeds=(0, 1), epochs=1, device="cpu", out=root / "runs" / "a_lite", show_progress=False)
    evaluate(root / "runs" / "a_lite", workers=1, device="cpu", show_progress=False)
    other = root / "runs" / "b_cisca"
    shutil.copytree(root / "runs" / "a_lite", other)
    path = other / "eval_test" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["decoder"] = "cisca"
    metrics["tile"]["mean"]["bpq"], metrics["tile"]["sd"]["bpq"] = 0.625, 0.125
    path.write_text(json.dumps(metrics))
    return root / "runs"


def test_compare_writes_one_row_per_run_to_csv_markdown_and_png(runs: Path, tmp_path: Path) -> None:
    table = compare(runs, out=tmp_path)
    assert [r.label for r in table.rows] == ["tiny-vit x lite", "tiny-vit x cisca"]
    with open(tmp_path / "comparison.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["label"], r["decoder"], r["seeds"]) for r in rows] == [("tiny-vit x lite", "lite", "2"),
                                                                       ("tiny-vit x cisca", "cisca", "2")]
    assert float(rows[1]["bpq"]) == 0.625 and float(rows[1]["bpq_sd"]) == 0.125
    lite = json.loads((runs / "a_lite" / "eval_test" / "metrics.json").read_text())["tile"]["mean"]
    assert float(rows[0]["mpq_plus"]) == pytest.approx(lite["mpq_plus"])
    markdown = (tmp_path / "comparison.md").read_text().splitlines()
    assert markdown[2].startswith("| encoder x decoder | seeds | bPQ | DQ | SQ | AJI | mPQ | mPQ+ | F1 | R2 |")
    cisca_bpq = "**0.625 ± 0.125**" if lite["bpq"] < 0.625 else "0.625 ± 0.125"  # the best mean is bold
    assert markdown[5].startswith(f"| tiny-vit x cisca | 2 | {cisca_bpq} |")
    assert len(markdown) == 6
    assert (tmp_path / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_columns_include_per_class_pq_plus_and_f1(runs: Path) -> None:
    headers = [h for _, h in compare(runs).columns]
    assert headers[:8] == ["bPQ", "DQ", "SQ", "AJI", "mPQ", "mPQ+", "F1", "R2"]
    assert "PQ+ Epithelial" in headers and "F1 Connective" in headers


def test_runs_can_be_listed_one_by_one(runs: Path) -> None:
    table = compare([runs / "b_cisca", runs / "a_lite"])
    assert [r.decoder for r in table.rows] == ["cisca", "lite"]
    assert table.level == "tile"  # these stores have no images larger than a tile


def test_runs_with_the_same_encoder_and_decoder_are_told_apart_by_folder(runs: Path) -> None:
    table = compare([runs / "a_lite", runs / "a_lite"])
    assert [r.label for r in table.rows] == ["tiny-vit x lite (a_lite)"] * 2


def test_unevaluated_runs_and_empty_folders_are_user_errors(runs: Path, tmp_path: Path) -> None:
    with pytest.raises(EmbedstoreError, match="not evaluated on 'val'"):
        compare(runs, split="val")
    with pytest.raises(EmbedstoreError, match="no runs"):
        find_runs([tmp_path])
    with pytest.raises(EmbedstoreError, match="no such run"):
        compare(tmp_path / "missing")
    with pytest.raises(EmbedstoreError, match="no 'image' results"):
        compare(runs, level="image")


def test_runs_that_read_fewer_levels_are_labelled_by_their_levels(runs: Path, tmp_path: Path) -> None:
    folder = tmp_path / "runs"
    shutil.copytree(runs, folder)
    for name, levels in (("a_lite", []), ("b_cisca", [2, 3])):
        path = folder / name / "eval_test" / "metrics.json"
        metrics = json.loads(path.read_text())
        metrics["levels"] = levels
        path.write_text(json.dumps(metrics))
    table = compare(folder, out=tmp_path)
    assert [r.label for r in table.rows] == ["tiny-vit x lite none", "tiny-vit x cisca L23"]


def test_the_best_mean_of_each_column_is_marked_in_markdown_and_csv(runs: Path, tmp_path: Path) -> None:
    table = compare(runs, out=tmp_path)
    lite, cisca = table.rows
    higher = 1 if cisca.mean["bpq"] > lite.mean["bpq"] else 0
    assert table.best("bpq") == {higher}
    assert table.best("bsq") == set()  # the copy shares every other column with its source: a tie marks none
    with open(tmp_path / "comparison.csv", newline="") as f:
        best = [r["best"].split(";") for r in csv.DictReader(f)]
    assert "bPQ" in best[higher] and "bPQ" not in best[1 - higher] and "SQ" not in best[0] + best[1]
    row = (tmp_path / "comparison.md").read_text().splitlines()[4 + higher]
    assert row.split(" | ")[2].startswith("**")


def test_a_single_run_has_no_best_mark(runs: Path) -> None:
    table = compare(runs / "a_lite")
    assert all(table.best(k) == set() for k, _ in table.columns)
