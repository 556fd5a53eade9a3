"""The linear probe: F1 / balanced accuracy against hand-computed values, informative vs random features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from embedstore.errors import EmbedstoreError
from embedstore.trainer.probe.cells import CellTable, save_cells
from embedstore.trainer.probe.linear import balanced_accuracy, fit_probe, per_class_f1

NAMES = ("Epithelial", "Inflammatory", "Connective")


def test_f1_and_balanced_accuracy_match_hand_computed_values() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    # class 0: TP 2, FP 0, FN 1 -> 4/5; class 1: TP 1, FP 1, FN 1 -> 1/2; class 2: TP 1, FP 1, FN 0 -> 2/3
    np.testing.assert_allclose(per_class_f1(y_true, y_pred, np.arange(4)), [0.8, 0.5, 2 / 3, np.nan])
    # recalls 2/3, 1/2, 1 -> mean 13/18
    assert balanced_accuracy(y_true, y_pred) == pytest.approx(13 / 18)
    assert balanced_accuracy(np.array([0, 0, 0, 1]), np.zeros(4, int)) == pytest.approx(0.5)


def _table(split: str, features: np.ndarray, cls: np.ndarray) -> CellTable:
    n = len(cls)
    return CellTable(features={1: features.astype(np.float32)}, cls=cls, tile=np.arange(n), cell=np.ones(n, np.int64),
                     class_names=NAMES, encoder="test", split=split)


def _split(seed: int, n: int, informative: bool) -> tuple[np.ndarray, np.ndarray]:
    """(n, 16) features and (n,) classes 1..3 drawn unevenly (60/30/10 %)."""
    rng = np.random.default_rng(seed)
    cls = rng.choice([1, 2, 3], size=n, p=[0.6, 0.3, 0.1])
    x = rng.normal(size=(n, 16))
    if informative:
        x[:, :3] += 3.0 * np.eye(3)[cls - 1]
    return x, cls


def test_probe_separates_features_that_encode_the_class() -> None:
    train, test = _table("train", *_split(0, 600, True)), _table("test", *_split(1, 600, True))
    report = fit_probe(train, test, 1)
    assert report["balanced_accuracy"] > 0.9
    assert min(report["f1"].values()) > 0.8
    assert (report["n_train"], report["n_test"]) == (600, 600)


def test_probe_on_random_features_stays_near_chance() -> None:
    train, test = _table("train", *_split(0, 600, False)), _table("test", *_split(1, 600, False))
    report = fit_probe(train, test, 1)
    assert abs(report["balanced_accuracy"] - 1 / 3) < 0.08


def test_probe_is_deterministic_and_refuses_a_missing_level() -> None:
    train, test = _table("train", *_split(0, 200, True)), _table("test", *_split(1, 200, True))
    assert fit_probe(train, test, 1) == fit_probe(train, test, 1)
    with pytest.raises(EmbedstoreError, match="--level 0"):
        fit_probe(train, test, 0)


def test_probe_command_prints_a_table_per_level(tmp_path: Path) -> None:
    from embedstore.cli.probe_cmd import probe_command

    for split, seed in (("train", 0), ("test", 1)):
        x, cls = _split(seed, 300, True)
        save_cells(CellTable(features={0: x.astype(np.float32), 1: np.zeros_like(x, np.float32)}, cls=cls,
                             tile=np.arange(300), cell=np.ones(300, np.int64), class_names=NAMES,
                             encoder="test", split=split), tmp_path)
    app = typer.Typer()
    app.command("probe")(probe_command)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["probe", "--cells", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "level 0" in result.output and "level 1" in result.output and "Epithelial" in result.output
    missing = CliRunner().invoke(app, ["probe", "--cells", str(tmp_path / "none")])
    assert missing.exit_code != 0 and isinstance(missing.exception, EmbedstoreError)
