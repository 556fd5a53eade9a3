"""Cell tokens: pooled features, coverage of labelled cells, the npz table and the user errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from embedstore.errors import EmbedstoreError
from embedstore.store import open_store
from embedstore.trainer.probe.cells import load_cells, pool_cell_tokens, save_cells, token_overlap


@pytest.fixture(scope="module")
def store_path(tiny_store) -> Path:
    """32 synthetic H&E tiles of 64 px (3 classes) with tiny-vit features (random weights)."""
    return tiny_store(32)


def test_token_overlap_splits_pixels_that_straddle_two_tokens() -> None:
    np.testing.assert_allclose(token_overlap(5, 2), [[1, 1, 0.5, 0, 0], [0, 0, 0.5, 1, 1]])
    np.testing.assert_allclose(token_overlap(4, 2), [[1, 1, 0, 0], [0, 0, 1, 1]])


def test_pooled_feature_equals_hand_computed_mean_of_one_cell(store_path: Path) -> None:
    table = pool_cell_tokens(store_path, "tiny-vit", [0, 2], "train", show_progress=False)
    store = open_store(store_path)
    row = int(np.argmin([np.sum(store.array("labels/instance")[t] == c) for t, c in zip(table.tile, table.cell)]))
    tile, cell = int(table.tile[row]), int(table.cell[row])
    mask = np.asarray(store.array("labels/instance")[tile]) == cell
    for level in (0, 2):
        tokens = np.asarray(store.features("tiny-vit")[f"level_{level}"][tile, 0], dtype=np.float64)  # (C, h, w)
        c, h, w = tokens.shape
        step = mask.shape[0] // h
        expected = np.zeros(c)
        for y in range(h):
            for x in range(w):
                share = mask[y * step:(y + 1) * step, x * step:(x + 1) * step].sum() / mask.sum()
                expected += share * tokens[:, y, x]
        np.testing.assert_allclose(table.features[level][row], expected, rtol=1e-5, atol=1e-5)


def test_every_labelled_cell_appears_once(store_path: Path) -> None:
    store = open_store(store_path)
    for split in ("train", "test"):
        table = pool_cell_tokens(store, "tiny-vit", None, split, show_progress=False)
        pairs = list(zip(table.tile.tolist(), table.cell.tolist()))
        assert len(pairs) == len(set(pairs))
        expected = {}
        for t in store.samples().indices(split):
            inst, cls = np.asarray(store.array("labels/instance")[t]), np.asarray(store.array("labels/class")[t])
            for c in np.unique(inst[inst > 0]):
                values, counts = np.unique(cls[(inst == c) & (cls > 0)], return_counts=True)
                if counts.size:
                    expected[(int(t), int(c))] = int(values[np.argmax(counts)])
        assert dict(zip(pairs, table.cls.tolist())) == expected
        assert sorted(table.features) == [0, 1, 2, 3]
        assert all(v.shape == (len(table), 64) for v in table.features.values())


def test_table_round_trips_through_npz_without_pickle(store_path: Path, tmp_path: Path) -> None:
    table = pool_cell_tokens(store_path, "tiny-vit", [1], "test", show_progress=False)
    path = save_cells(table, tmp_path)
    assert path.name == "cells_test.npz" and not list(tmp_path.glob("*.tmp"))
    back = load_cells(tmp_path, "test")
    np.testing.assert_array_equal(back.features[1], table.features[1])
    np.testing.assert_array_equal(back.cls, table.cls)
    assert (back.class_names, back.encoder, back.split) == (table.class_names, "tiny-vit", "test")


def test_unknown_encoder_and_empty_split_are_user_errors(store_path: Path) -> None:
    with pytest.raises(EmbedstoreError, match="no features for encoder 'uni'"):
        pool_cell_tokens(store_path, "uni", None, "train", show_progress=False)
    with pytest.raises(EmbedstoreError, match="split 'holdout' has no labelled cells"):
        pool_cell_tokens(store_path, "tiny-vit", None, "holdout", show_progress=False)
    with pytest.raises(EmbedstoreError, match="--level 7"):
        pool_cell_tokens(store_path, "tiny-vit", [7], "train", show_progress=False)


def test_store_without_classes_is_a_user_error(tmp_path: Path) -> None:
    from embedstore.extract.pipeline import extract_into_store

    path = tmp_path / "nissl.zarr"
    extract_into_store(path, "tiny-vit", dataset="synthetic", options={"n": 4, "stain": "nissl"}, tile_size=64,
                       weights="random", device="cpu", show_progress=False)
    with pytest.raises(EmbedstoreError, match="no cell classes"):
        pool_cell_tokens(path, "tiny-vit", None, "train", show_progress=False)


def test_cells_command_writes_one_table_per_split(store_path: Path, tmp_path: Path) -> None:
    from embedstore.cli.probe_cmd import cells_command

    app = typer.Typer()
    app.command("cells")(cells_command)
    app.command("other")(lambda: None)  # two commands: typer keeps the command name
    result = CliRunner().invoke(app, ["cells", "--store", str(store_path), "--encoder", "tiny-vit", "--level", "2",
                                      "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells_test.npz", "cells_train.npz", "cells_val.npz"]
    assert sorted(load_cells(tmp_path, "train").features) == [2]
