"""`embed bench train`: three arms on the same batches, stepped by training's own step."""

from __future__ import annotations

from pathlib import Path

import pytest

import embedstore.trainer.fit.step as step_module
from embedstore.trainer.bench.train import bench_train


def test_bench_train_times_the_three_arms_on_the_same_batches(tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}
    loss = step_module.cisca_loss

    def counting_loss(*args, **kwargs):
        calls["n"] += 1
        return loss(*args, **kwargs)

    monkeypatch.setattr(step_module, "cisca_loss", counting_loss)
    (row,) = bench_train(("tiny-vit",), n_tiles=4, batch_size=2, tile_size=64, workdir=tmp_path, show_progress=False)
    assert row["encoder"] == "tiny-vit" and row["tiles"] == 4
    assert row["a_over_b"] == pytest.approx(row["store_tiles_per_s"] / row["ram_tiles_per_s"])
    assert row["a_over_c"] == pytest.approx(row["store_tiles_per_s"] / row["online_tiles_per_s"])
    total = row["online_encoder_s"] + row["online_decoder_s"]
    assert row["ideal_a_over_c"] == pytest.approx(total / row["online_decoder_s"]) and row["ideal_a_over_c"] > 1
    assert calls["n"] == 1 + 3 * 2  # warm-up step, then three arms of two batches: all through fit.step
