"""Extraction: levels equal the encoder's outputs, views, refusal of other weights, resume after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from embedstore.imaging.dihedral import dihedral
from embedstore.encoders import build_encoder
from embedstore.errors import EmbedstoreError
from embedstore.extract import extract
from embedstore.store import completeness
from embedstore.extract.pipeline import extract_into_store, ingest_dataset
from embedstore.store import open_store


def _reference_levels(images: np.ndarray, weights_seed: int = 0) -> list[np.ndarray]:
    encoder = build_encoder("tiny-vit", "random", seed=weights_seed)
    with torch.inference_mode():
        return [lvl.numpy() for lvl in encoder(torch.from_numpy(images))]


def test_extracted_levels_equal_the_encoder_outputs_and_are_committed(synthetic_store: Path) -> None:
    store = open_store(synthetic_store)
    group = store.features("tiny-vit")
    assert completeness(group) == (store.n_samples, store.n_samples)
    images = np.asarray(store.array("images")[:6])
    expected = _reference_levels(images)
    for k in range(4):
        stored = np.asarray(group[f"level_{k}"][:6])
        assert stored.shape[:2] == (6, 1) and stored.dtype == np.float16
        np.testing.assert_allclose(stored[:, 0].astype(np.float32), expected[k], rtol=2e-3, atol=2e-3)
    assert group.attrs["fingerprint"] == "random:0"
    assert group.attrs["encoder"]["key"] == "tiny-vit"


def test_batches_spanning_shards_give_the_same_features(tmp_path: Path, synthetic_store: Path) -> None:
    report = extract_into_store(tmp_path / "b.zarr", "tiny-vit", dataset="synthetic", options={"n": 24},
                                weights="random", device="cpu", batch_size=5, show_progress=False)
    assert report.tiles_written == 24
    a = open_store(synthetic_store).features("tiny-vit")["level_3"][:]
    b = open_store(tmp_path / "b.zarr").features("tiny-vit")["level_3"][:]
    np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=2e-3)


def test_eight_views_hold_the_features_of_each_dihedral_transform(tmp_path: Path) -> None:
    extract_into_store(tmp_path / "v.zarr", "tiny-vit", dataset="synthetic", options={"n": 3},
                       weights="random", device="cpu", views=8, show_progress=False)
    store = open_store(tmp_path / "v.zarr")
    level = np.asarray(store.features("tiny-vit")["level_1"][:])
    assert level.shape[:2] == (3, 8)
    image = np.asarray(store.array("images")[1])
    expected = _reference_levels(np.stack([dihedral(image, t).copy() for t in range(8)]))[1]
    np.testing.assert_allclose(level[1].astype(np.float32), expected, rtol=2e-3, atol=2e-3)
    assert not np.allclose(level[1, 0], level[1, 1], atol=1e-2)  # the views differ


def test_other_weights_are_refused_unless_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "o.zarr"
    extract_into_store(path, "tiny-vit", dataset="synthetic", options={"n": 4}, weights="random",
                       device="cpu", show_progress=False)
    with pytest.raises(EmbedstoreError, match="fingerprint random:0.*random:1.*--overwrite"):
        extract_into_store(path, "tiny-vit", weights="random", seed=1, device="cpu", show_progress=False)
    report = extract_into_store(path, "tiny-vit", weights="random", seed=1, device="cpu", overwrite=True,
                                show_progress=False)
    assert report.tiles_written == 4
    assert open_store(path).features("tiny-vit").attrs["fingerprint"] == "random:1"


def test_several_encoders_share_one_store(tmp_path: Path) -> None:
    path = tmp_path / "m.zarr"
    extract_into_store(path, "tiny-vit", dataset="synthetic", options={"n": 4}, weights="random",
                       device="cpu", show_progress=False)
    extract_into_store(path, "tiny-cnn", weights="random", device="cpu", show_progress=False)
    store = open_store(path)
    assert store.feature_keys() == ["tiny-cnn", "tiny-vit"]
    cnn_shapes = store.features("tiny-cnn").attrs["level_shapes"]
    assert [s[1] for s in cnn_shapes] == [64, 32, 16, 8]


def test_a_second_run_writes_nothing(synthetic_store: Path, tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "copy.zarr"
    shutil.copytree(synthetic_store, path)
    report = extract_into_store(path, "tiny-vit", weights="random", device="cpu", show_progress=False)
    assert report.tiles_written == 0 and report.tiles_skipped == report.tiles_total


def test_extract_refuses_a_read_only_store(synthetic_store: Path) -> None:
    with pytest.raises(EmbedstoreError, match="read-only"):
        extract(open_store(synthetic_store), build_encoder("tiny-vit", "random"), device="cpu",
                show_progress=False)


def _feature_arrays(path: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(path / "features" / "timm-vit_small_patch16_224"), mode="r")
    return {name: np.asarray(group[name][:]) for name in sorted(group.array_keys())}


def _extract_cmd(store: Path) -> list[str]:
    return [sys.executable, "-m", "embedstore.cli", "extract", "--encoder", "timm:vit_small_patch16_224",
            "--dataset", "synthetic", "--option", "n=64", "--weights", "random", "--device", "cpu",
            "--batch-size", "2", "--store", str(store), "--quiet"]


def test_kill_9_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed.zarr"
    proc = subprocess.Popen(_extract_cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done_dir = killed / "features" / "timm-vit_small_patch16_224" / "done"
    deadline = time.time() + 120
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            committed = int(zarr.open_array(str(done_dir), mode="r")[:].sum())
        except Exception:
            committed = 0
        if committed >= 16:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "extraction finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = int(zarr.open_array(str(done_dir), mode="r")[:].sum())
    assert 16 <= partial < 64
    resumed = subprocess.run(_extract_cmd(killed), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    out = " ".join(resumed.stdout.split())
    assert partial % 16 == 0  # whole shards only
    assert f"wrote {64 - partial} tiles" in out and f"{partial} already committed" in out
    clean = tmp_path / "clean.zarr"
    subprocess.run(_extract_cmd(clean), env=env, check=True, capture_output=True)
    a, b = _feature_arrays(killed), _feature_arrays(clean)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_ingest_dataset_errors_name_the_option(tmp_path: Path) -> None:
    with pytest.raises(EmbedstoreError, match="no_such_option"):
        ingest_dataset(tmp_path / "x.zarr", "synthetic", options={"no_such_option": "1"}, show_progress=False)


def test_the_dtype_option_names_auto_and_exactly_the_compute_dtypes() -> None:
    from typing import get_args

    from embedstore.extract import COMPUTE_DTYPES
    from embedstore.extract.precision import ComputeDtype, resolve_dtype

    assert get_args(ComputeDtype) == ("auto", *COMPUTE_DTYPES)
    assert resolve_dtype("auto", torch.device("cpu")) == "fp32"
    with pytest.raises(EmbedstoreError, match="--dtype fp8"):
        resolve_dtype("fp8", torch.device("cpu"))


def test_a_typed_option_and_its_command_line_text_record_one_signature() -> None:
    """``-o merge_types=false`` (text) and ``merge_types = false`` in a TOML plan (a bool) name one store."""
    from embedstore.datasets import dataset_options
    from embedstore.store.ingest import recorded_options

    typed, text = (recorded_options(dataset_options("consep", {"merge_types": v})) for v in (False, "false"))
    assert typed == text == {"merge_types": "False"}
    assert recorded_options(dataset_options("consep", {"merge_types": "yes"})) == {"merge_types": "True"}
    with pytest.raises(EmbedstoreError, match="merge_types='maybe'"):
        dataset_options("consep", {"merge_types": "maybe"})


def test_ingest_records_the_typed_options_and_reuses_the_store(tmp_path: Path) -> None:
    location = tmp_path / "x.zarr"
    first = ingest_dataset(location, "synthetic", options={"n": "8"}, tile_size=32, show_progress=False)
    again = ingest_dataset(location, "synthetic", options={"n": 8}, tile_size=32, show_progress=False)
    assert first.dataset["options"] == again.dataset["options"] == {"n": "8", "stride": "32"}
    with pytest.raises(EmbedstoreError, match="other options"):
        ingest_dataset(location, "synthetic", options={"n": "9"}, tile_size=32, show_progress=False)
