"""`train`: learning on synthetic and real tiles, the run folder, K seeds in one pass, bit-exact resume."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import embedstore.trainer.fit.step as step_module
from embedstore.datasets import get_dataset
from embedstore.datasets.base import DatasetInfo, Tile
from embedstore.encoders import build_encoder
from embedstore.errors import EmbedstoreError
from embedstore.extract import extract
from embedstore.store import ingest
from embedstore.trainer.model.checkpoint import load_decoder
from embedstore.trainer.model.decoder import DecoderConfig, build_decoder, count_parameters
from embedstore.trainer.fit.options import DataOptions, Optimisation
from embedstore.trainer.fit.train import TrainInterrupted, train

TIMING = ("tiles_per_s", "seconds")


@pytest.fixture(scope="module")
def store_path(tiny_store) -> Path:
    """10 synthetic H&E tiles of 64 px (6 train, 2 val) with tiny-vit features (random weights)."""
    return tiny_store(10)


@dataclasses.dataclass
class _Subset:
    """Some tiles of a dataset adapter, all put in the train split."""

    base: object
    indices: list[int]

    @property
    def info(self) -> DatasetInfo:
        return self.base.info

    def __len__(self) -> int:
        return len(self.indices)

    def tile(self, i: int) -> Tile:
        return dataclasses.replace(self.base.tile(self.indices[i]), split="train")


@pytest.fixture(scope="module")
def monuseg_store(tmp_path_factory: pytest.TempPathFactory, real_data: Path) -> Path:
    """4 MoNuSeg tiles of 128 px (18-21 nuclei each) through the monuseg adapter, tiny-vit random features."""
    dataset = get_dataset("monuseg", real_data / "monuseg", tile_size=128)
    path = tmp_path_factory.mktemp("real") / "monuseg.zarr"
    store = ingest(_Subset(dataset, [4, 11, 25, 28]), path, tile_size=128, show_progress=False)
    extract(store, build_encoder("tiny-vit", "random", seed=0), device="cpu", show_progress=False)
    return path


def _run(store: Path, out: Path, **kwargs: object):
    options = {"epochs": 2, "data": DataOptions(batch_size=2), "show_progress": False, **kwargs}
    return train(store, out=out, **options)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_epochs(store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference run: 2 epochs, seed 0."""
    out = tmp_path_factory.mktemp("runs") / "two"
    _run(store_path, out)
    return out


def test_training_lowers_the_loss_on_synthetic_tiles(store_path: Path, tmp_path: Path) -> None:
    report = _run(store_path, tmp_path / "run", epochs=6, optimisation=Optimisation(lr=2e-3))
    rows = _rows(tmp_path / "run")
    assert [r["epoch"] for r in rows] == list(range(6))
    assert rows[-1]["train_loss"] < 0.8 * rows[0]["train_loss"]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    assert report.seeds[0].best_val_loss == min(r["val_loss"] for r in rows)


def test_the_run_folder_holds_config_checkpoints_metrics_and_curves(two_epochs: Path, store_path: Path) -> None:
    config = json.loads((two_epochs / "config.json").read_text())
    assert config["encoder_key"] == "tiny-vit" and config["encoder_fingerprint"] == "random:0"
    assert config["store"] == str(store_path.resolve())
    assert config["decoder"]["preset"] == "lite" and config["decoder"]["n_types"] == 3
    assert config["dataset"]["magnification"] == "40x"
    assert config["train_tiles"] == 6 and config["val_tiles"] == 2
    for name in ("best.safetensors", "last.safetensors", "state.safetensors", "state.json"):
        assert (two_epochs / "seed_0" / name).is_file(), name
    rows = _rows(two_epochs)
    for key in ("train_loss", "train_mae", "train_msge", "val_loss", "val_direction_mae", "val_accuracy", "lr"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert all(0 <= r["val_accuracy"] <= 1 and r["val_direction_mae"] >= 0 for r in rows)
    header = (two_epochs / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "seed", "val_direction_mae", "val_accuracy", "tiles_per_s"} <= set(header)
    assert (two_epochs / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_best_checkpoint_rebuilds_a_decoder_that_reproduces_the_best_validation_loss(two_epochs: Path) -> None:
    model = load_decoder(two_epochs / "seed_0" / "best.safetensors")
    config = json.loads((two_epochs / "config.json").read_text())
    assert model.cfg == DecoderConfig.from_dict(config["decoder"])
    best = min(r["val_loss"] for r in _rows(two_epochs))
    meta_loss = json.loads((two_epochs / "seed_0" / "state.json").read_text())["stopping"]["best_val"]
    assert meta_loss == best


def test_k_seeds_in_one_pass_give_the_weights_of_k_separate_runs(store_path: Path, two_epochs: Path,
                                                                  tmp_path: Path) -> None:
    report = _run(store_path, tmp_path / "both", seeds=(0, 1))
    _run(store_path, tmp_path / "one", seeds=(1,))
    assert [s.seed for s in report.seeds] == [0, 1]
    for name in ("best.safetensors", "last.safetensors"):
        assert _same_weights(tmp_path / "both" / "seed_0" / name, two_epochs / "seed_0" / name)
        assert _same_weights(tmp_path / "both" / "seed_1" / name, tmp_path / "one" / "seed_1" / name)
    assert not _same_weights(tmp_path / "both" / "seed_0" / "last.safetensors",
                             tmp_path / "both" / "seed_1" / "last.safetensors")


def _assert_same_run(a: Path, b: Path) -> None:
    for name in ("best.safetensors", "last.safetensors", "state.safetensors"):
        assert _same_weights(a / "seed_0" / name, b / "seed_0" / name), name
    assert _rows(a) == _rows(b)


def test_resume_continues_bit_for_bit(store_path: Path, two_epochs: Path, tmp_path: Path) -> None:
    _run(store_path, tmp_path / "run", epochs=1)
    _run(store_path, tmp_path / "run", epochs=2, resume=True)
    _assert_same_run(two_epochs, tmp_path / "run")


def test_ctrl_c_mid_epoch_saves_a_checkpoint_that_resumes_bit_for_bit(store_path: Path, two_epochs: Path,
                                                                       tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}
    loss = step_module.cisca_loss

    def interrupting_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # during the second training batch of epoch 0
            signal.raise_signal(signal.SIGINT)
        return loss(*args, **kwargs)

    monkeypatch.setattr(step_module, "cisca_loss", interrupting_loss)
    with pytest.raises(TrainInterrupted, match="batch 2/3"):
        _run(store_path, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "seed_0" / "state.json").read_text())["position"] == [0, 2]
    monkeypatch.setattr(step_module, "cisca_loss", loss)
    _run(store_path, tmp_path / "run", resume=True)
    _assert_same_run(two_epochs, tmp_path / "run")


def test_early_stopping_ends_a_seed_after_patience_epochs_without_improvement(store_path: Path,
                                                                               tmp_path: Path) -> None:
    report = _run(store_path, tmp_path / "run", epochs=10, optimisation=Optimisation(lr=0.0, stop_patience=2))
    result = report.seeds[0]
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 0


def test_dry_run_counts_parameters_and_writes_nothing(store_path: Path, tmp_path: Path) -> None:
    report = _run(store_path, tmp_path / "run", dry_run=True, decoder="cisca")
    cfg = DecoderConfig(preset="cisca", level_dims=(64,) * 4, level_grids=(4,) * 4, n_types=3, tile_size=64)
    assert report.dry_run and report.parameters == count_parameters(build_decoder(cfg))
    assert not (tmp_path / "run").exists()


def test_partially_extracted_features_train_on_the_committed_tiles(store_path: Path, tmp_path: Path) -> None:
    import zarr

    copy = tmp_path / "partial.zarr"
    shutil.copytree(store_path, copy)
    zarr.open_array(copy / "features" / "tiny-vit" / "done", mode="r+")[0, 0] = False  # tile 0 is train
    notices: list[str] = []
    report = _run(copy, tmp_path / "run", epochs=1, say=notices.append)
    assert report.missing_tiles == 1 and report.train_tiles == 5
    assert len(notices) == 1 and "partly extracted" in notices[0] and "1 'train'" in notices[0]
    with pytest.raises(EmbedstoreError, match="require-complete"):
        _run(copy, tmp_path / "run2", epochs=1, data=DataOptions(batch_size=2, require_complete=True))


def test_bad_inputs_raise_one_line_errors(store_path: Path, two_epochs: Path, tmp_path: Path) -> None:
    cases = [
        (dict(encoder_key="uni"), "no features for encoder 'uni'"),
        (dict(data=DataOptions(batch_size=2, split_val="holdout")), "split 'holdout' has no tiles"),
        (dict(seeds=(1, 1)), "distinct seeds"),
        (dict(out=two_epochs), "already holds a run"),
        (dict(resume=True), "no run to resume"),
        (dict(out=two_epochs, resume=True, decoder="cisca"), "different decoder"),
        (dict(out=two_epochs, resume=True, optimisation=Optimisation(lr=1e-3)), "different lr"),
    ]
    for options, message in cases:
        options = {"out": tmp_path / "fresh", "data": DataOptions(batch_size=2), **options}
        with pytest.raises(EmbedstoreError, match=message) as err:
            train(store_path, show_progress=False, **options)
        assert "\n" not in str(err.value)
    unlabelled = tmp_path / "unlabelled.zarr"
    shutil.copytree(store_path, unlabelled)
    shutil.rmtree(unlabelled / "labels" / "instance")
    with pytest.raises(EmbedstoreError, match="no labels"):
        train(unlabelled, out=tmp_path / "x", show_progress=False)


def _overfit(store: Path, out: Path, epochs: int) -> list[dict]:
    train(store, out=out, epochs=epochs, data=DataOptions(split_val="train", batch_size=4),
          optimisation=Optimisation(lr=2e-3, stop_patience=epochs), show_progress=False)
    return _rows(out)


def test_a_decoder_starts_to_fit_a_handful_of_real_tiles(monuseg_store: Path, tmp_path: Path) -> None:
    rows = _overfit(monuseg_store, tmp_path / "run", epochs=12)
    assert rows[-1]["val_loss"] < 0.75 * rows[0]["val_loss"]
    assert rows[-1]["val_accuracy"] > 0.7


@pytest.mark.slow
def test_a_decoder_overfits_a_handful_of_real_tiles(monuseg_store: Path, tmp_path: Path) -> None:
    rows = _overfit(monuseg_store, tmp_path / "run", epochs=120)
    assert rows[-1]["val_loss"] < 0.15 * rows[0]["val_loss"]
    assert rows[-1]["val_accuracy"] > 0.95
    assert rows[-1]["val_direction_mae"] < 0.15
