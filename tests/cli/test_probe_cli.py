"""`embed cells` then `embed probe` from the command line: tables written, one row of scores per level."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedstore.cli.app import main


def test_cells_then_probe_print_a_table_per_level(synthetic_store: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cells"
    assert main(["cells", "--store", str(synthetic_store), "--encoder", "tiny-vit", "--out", str(out), "--quiet"]) == 0
    assert {p.name for p in out.iterdir()} >= {"cells_train.npz", "cells_test.npz"}
    capsys.readouterr()
    assert main(["probe", "--cells", str(out), "--level", "3"]) == 0
    assert "balanced" in capsys.readouterr().out.lower()


def test_cells_of_an_unknown_encoder_is_a_one_line_error(synthetic_store: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cells", "--store", str(synthetic_store), "--encoder", "uni", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "uni" in err and "Traceback" not in err
