"""`run_study` end to end on a tiny synthetic study: tables, resume, stale steps, dry runs, gated weights."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
from scipy import stats

from embedstore.errors import EmbedstoreError
from embedstore.trainer.study import load_plan, run_study

PLAN = """
out = "out"
seeds = [0, 1]
[defaults]
epochs = 1
tile_size = 64
device = "cpu"
eval_workers = 1
[[dataset]]
name = "syn"
adapter = "synthetic"
options = { n = 10 }
[[encoder]]
name = "tiny-vit"
weights = "random"
[[variant]]
name = "lite-all"
levels = "0,1,2,3"
"""


def plan_file(folder: Path, text: str = PLAN) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "plan.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, str]]]:
    """A study run once: its plan file and (step id, state) of that first run."""
    path = plan_file(tmp_path_factory.mktemp("study"))
    report = run_study(load_plan(path), say=None, show_progress=False)
    return path, [(s.id, s.state) for s in report.steps]


def metrics(out: Path, encoder: str, variant: str) -> dict:
    return json.loads((out / "runs" / "syn" / encoder / variant / "eval_test" / "metrics.json").read_text())


def test_a_first_run_does_every_step_in_order(study: tuple[Path, list]) -> None:
    _, steps = study
    assert steps == [("extract/syn/tiny-vit", "ran"), ("train/syn/tiny-vit", "ran"),
                     ("evaluate/syn/tiny-vit/lite-all", "ran"), ("train/syn/baseline", "ran"),
                     ("evaluate/syn/baseline/baseline", "ran"),
                     ("compare/syn", "ran")]


def test_the_tables_have_a_row_per_encoder_variant_and_the_baseline_with_the_best_marked(study: tuple[Path, list]
                                                                                       ) -> None:
    out = study[0].parent / "out" / "tables" / "syn"
    with open(out / "comparison.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == ["tiny-vit x lite-all", "baseline"]
    lite = metrics(study[0].parent / "out", "tiny-vit", "lite-all")["tile"]["mean"]
    assert float(rows[0]["aji"]) == pytest.approx(lite["aji"])
    base = metrics(study[0].parent / "out", "baseline", "baseline")["tile"]["mean"]
    winner = 0 if lite["det_f1"] > base["det_f1"] else 1
    if lite["det_f1"] != base["det_f1"]:
        assert "F1" in rows[winner]["best"].split(";") and "F1" not in rows[1 - winner]["best"].split(";")
    markdown = (out / "comparison.md").read_text()
    assert "| AJI |" in markdown and "| tiny-vit x lite-all |" in markdown and "| baseline |" in markdown
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_the_gap_is_the_paired_difference_to_the_baseline_over_seeds(study: tuple[Path, list]) -> None:
    out = study[0].parent / "out"
    with open(out / "tables" / "syn" / "gap.csv", newline="") as f:
        rows = {r["metric"]: r for r in csv.DictReader(f)}
    assert {"bpq", "bdq", "bsq", "aji", "det_f1"} <= set(rows)
    lite = metrics(out, "tiny-vit", "lite-all")["tile"]["per_seed"]
    base = metrics(out, "baseline", "baseline")["tile"]["per_seed"]
    diffs = [lite[s]["aji"] - base[s]["aji"] for s in ("0", "1")]
    aji = rows["aji"]
    mean, sd = (diffs[0] + diffs[1]) / 2, abs(diffs[0] - diffs[1]) / math.sqrt(2)
    assert (aji["label"], aji["baseline"], int(aji["n"])) == ("tiny-vit x lite-all", "baseline", 2)
    assert float(aji["mean_diff"]) == pytest.approx(mean) and float(aji["sd"]) == pytest.approx(sd)
    half = stats.t.ppf(0.975, 1) * sd / math.sqrt(2)
    assert float(aji["ci95_low"]) == pytest.approx(mean - half) and float(aji["ci95_high"]) == pytest.approx(mean + half)
    gap_md = (out / "tables" / "syn" / "gap.md").read_text()
    assert "| tiny-vit x lite-all |" in gap_md and "2 shared seeds" in gap_md


def test_a_second_run_does_nothing(study: tuple[Path, list]) -> None:
    path = study[0]
    out = path.parent / "out"
    outputs = [out / "runs" / "syn" / "tiny-vit" / "lite-all" / "seed_0" / "best.safetensors",
               out / "runs" / "syn" / "baseline" / "baseline" / "eval_test" / "metrics.json",
               out / "tables" / "syn" / "gap.csv"]
    before = [p.stat().st_mtime_ns for p in outputs]
    report = run_study(load_plan(path), say=None, show_progress=False)
    assert [s.state for s in report.steps] == ["done"] * 6
    assert [p.stat().st_mtime_ns for p in outputs] == before
    assert set(report.tables["syn"]) >= {"csv", "markdown", "png", "gap_csv", "gap_markdown"}


def pending(path: Path) -> list[str]:
    report = run_study(load_plan(path), dry_run=True, say=None)
    return [s.id for s in report.steps if s.state == "pending"]


def test_changed_seeds_make_training_evaluation_and_tables_pending_again(study: tuple[Path, list]) -> None:
    path = study[0]
    changed = path.with_name("seeds.toml")
    changed.write_text(PLAN.replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))
    assert pending(changed) == ["train/syn/tiny-vit", "evaluate/syn/tiny-vit/lite-all", "train/syn/baseline",
                                "evaluate/syn/baseline/baseline", "compare/syn"]


def test_a_changed_postprocess_leaves_training_done(study: tuple[Path, list]) -> None:
    path = study[0]
    changed = path.with_name("post.toml")
    changed.write_text(PLAN.replace('eval_workers = 1', 'eval_workers = 1\npostprocess = "improved"'))
    assert pending(changed) == ["evaluate/syn/tiny-vit/lite-all", "evaluate/syn/baseline/baseline", "compare/syn"]


def test_a_dry_run_lists_every_step_and_sizes_and_writes_nothing(tmp_path: Path) -> None:
    path = plan_file(tmp_path)
    lines: list[str] = []
    report = run_study(load_plan(path), dry_run=True, say=lines.append)
    assert [s.state for s in report.steps] == ["pending"] * 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.toml"]
    (size,) = report.sizes
    # tiny-vit on 64 px tiles: four 64-channel 4x4 grids, float16, 1 view
    assert (size.tiles, size.feature_bytes, size.tile_bytes) == (10, 10 * 4 * 64 * 4 * 4 * 2, 10 * 64 * 64 * 8)
    assert any(line.startswith("pending extract syn") for line in lines)
    assert any("store syn x tiny-vit: 10 tiles" in line for line in lines)


def test_a_gated_encoder_without_weights_stops_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    text = PLAN + '[[encoder]]\nname = "uni"\nweights = "hub"\n'
    path = plan_file(tmp_path / "gated", text)
    with pytest.raises(EmbedstoreError) as err:
        run_study(load_plan(path), say=None, show_progress=False)
    message = str(err.value)
    assert "\n" not in message and "'uni'" in message and "MahmoodLab/UNI" in message
    assert not (path.parent / "out").exists()  # not even the tiny-vit extraction listed before it started


STORED = """[[encoder]]
name = "tiny-vit"
weights = "random"
quantize = "int8"
[[encoder]]
name = "tiny-vit"
weights = "random"
pca = 16
"""


def test_stored_variants_of_an_encoder_get_their_own_stores_runs_and_rows(study: tuple[Path, list],
                                                                          tmp_path: Path) -> None:
    """int8 and PCA-16 rows added to a finished study: only their steps run, each in its own store."""
    from embedstore.store import open_store

    folder = tmp_path / "copy"
    shutil.copytree(study[0].parent, folder)
    path = plan_file(folder, PLAN.replace("[[variant]]", STORED + "[[variant]]"))
    assert [(s.encoder, s.feature_bytes) for s in run_study(load_plan(path), dry_run=True, say=None).sizes] == [
        ("tiny-vit", 10 * 4 * 64 * 16 * 2), ("tiny-vit int8", 10 * 4 * 64 * 16), ("tiny-vit pca16", 10 * 4 * 16 * 16 * 2)]
    report = run_study(load_plan(path), say=None, show_progress=False)
    ran = [s.id for s in report.steps if s.state == "ran"]
    assert ran == ["extract/syn/tiny-vit-int8", "extract/syn/tiny-vit-pca16", "train/syn/tiny-vit-int8",
                   "evaluate/syn/tiny-vit-int8/lite-all", "train/syn/tiny-vit-pca16",
                   "evaluate/syn/tiny-vit-pca16/lite-all", "compare/syn"]
    stores = folder / "out" / "stores"
    int8 = open_store(stores / "syn-int8.zarr").features("tiny-vit")
    pca = open_store(stores / "syn-pca16.zarr").features("tiny-vit")
    assert int8.attrs["storage_dtype"] == "int8" and int8["level_0"].dtype == "int8"
    assert pca.attrs["level_shapes"][0][0] == 16 and pca.attrs["transform"]["pca"] == 16
    assert "tiny-vit" in open_store(stores / "syn.zarr").feature_keys()
    with open(folder / "out" / "tables" / "syn" / "comparison.csv", newline="") as f:
        labels = [r["label"] for r in csv.DictReader(f)]
    assert labels == ["tiny-vit x lite-all", "tiny-vit int8 x lite-all", "tiny-vit pca16 x lite-all", "baseline"]
    assert [s.state for s in run_study(load_plan(path), say=None, show_progress=False).steps] == ["done"] * 12
