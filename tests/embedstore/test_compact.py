"""Smaller feature groups: --codec, --quantize int8 and --pca K, written, read back, resumed and refused."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from embedstore.cli.app import main
from embedstore.datasets import get_dataset
from embedstore.encoders import build_encoder
from embedstore.errors import EmbedstoreError
from embedstore.extract import compact, run
from embedstore.extract.pipeline import extract_into_store
from embedstore.store import ingest, open_store, store_bytes
from embedstore.store.codecs import (DEFAULT_CODEC, INT8_CODEC, codec_name, codec_record, codecs_of_record, default_codec,
                                     parse_codec)
from embedstore.store.features import INT8_FILL, load_transform, read_features
from embedstore.store.integrity import CorruptTileError, read_rows
from embedstore.store.verify import verify_store

N = 20  # synthetic tiles of 64 px: 12 train (all of them calibrate), 4 val, 4 test
KEY = "tiny-vit"


def _extract(path: Path, **kwargs: object) -> Path:
    extract_into_store(path, KEY, dataset="synthetic", options={"n": N}, tile_size=64, weights="random",
                       device="cpu", show_progress=False, **kwargs)
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``stores(name, **options)``: a store extracted with those options, built once per name."""
    root = tmp_path_factory.mktemp("compact")
    built: dict[str, Path] = {}

    def make(name: str, **kwargs: object) -> Path:
        if name not in built:
            built[name] = _extract(root / f"{name}.zarr", **kwargs)
        return built[name]

    return make


def _levels(path: Path, decoded: bool = True) -> list[np.ndarray]:
    """Every tile of the four levels: decoded (read_features) or as stored."""
    store = open_store(path)
    group = store.features(KEY)
    index = np.arange(store.n_samples)
    if decoded:
        return [read_features(group, k, index, sample_ids=store.sample_ids) for k in range(4)]
    return [read_rows(group[f"level_{k}"], index) for k in range(4)]


def _level_bytes(path: Path) -> int:
    return sum(store_bytes(path / "features" / KEY / f"level_{k}") for k in range(4))


def _arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the feature group, transform parameters included, by path inside the group."""
    group = zarr.open_group(str(path / "features" / KEY), mode="r")
    return {name: np.asarray(a[...]) for name, a in group.members(max_depth=None) if isinstance(a, zarr.Array)}


# --- --codec ------------------------------------------------------------------------------------------------
def test_codec_spellings_parse_to_blosc_settings_and_round_trip_through_the_record() -> None:
    for text, spelled in (("zstd:3:bitshuffle", "zstd:3:bitshuffle"), ("lz4:5:shuffle", "lz4:5:shuffle"),
                          ("zstd:1", "zstd:1:bitshuffle"), ("lz4", "lz4:3:bitshuffle"),
                          ("zlib:noshuffle", "zlib:3:noshuffle"), ("none", "none")):
        record = codec_record(parse_codec(text))
        assert codec_name(record) == spelled
        assert codec_name(codec_record(codecs_of_record(record))) == spelled
    assert [type(c).__name__ for c in parse_codec("none")] == ["Crc32cCodec"]  # the checksum stays
    assert codec_name(None) == DEFAULT_CODEC  # groups written before the option


@pytest.mark.parametrize("bad", ["gzip", "zstd:10", "zstd:3:bitshuffle:1", "lz4:fast", "zstd:shuffle:3", ""])
def test_a_bad_codec_is_refused_naming_the_option(bad: str) -> None:
    with pytest.raises(EmbedstoreError, match="--codec"):
        parse_codec(bad)


def test_the_cli_refuses_a_bad_codec_in_one_line_before_any_work(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.zarr"
    assert main(["extract", "--encoder", KEY, "--dataset", "synthetic", "--store", str(path),
                 "--codec", "brotli:3"]) == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--codec 'brotli:3'" in lines[0]
    assert not path.exists()  # refused before ingest


def test_an_lz4_store_records_its_codec_and_reads_the_same_features(stores: Callable[..., Path], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lz4.zarr"
    assert main(["extract", "--encoder", KEY, "--dataset", "synthetic", "--option", f"n={N}", "--tile-size", "64",
                 "--weights", "random", "--device", "cpu", "--store", str(path), "--codec", "lz4:5:shuffle",
                 "--quiet"]) == 0
    group = open_store(path).features(KEY)
    assert codec_name(group.attrs["codec"]) == "lz4:5:shuffle"
    inner = group["level_0"].metadata.codecs[-1].codecs  # the sharding codec's inner chunk codecs
    blosc = next(c for c in inner if isinstance(c, BloscCodec))
    assert (blosc.cname.value, blosc.clevel, blosc.shuffle.value, blosc.typesize) == ("lz4", 5, "shuffle", 2)
    assert isinstance(inner[-1], Crc32cCodec)
    for mine, default in zip(_levels(path), _levels(stores("fp16"))):
        np.testing.assert_array_equal(mine, default)  # lossless: only the bytes on disk differ
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    assert "codec lz4:5:shuffle" in " ".join(capsys.readouterr().out.split())


def test_another_codec_or_transform_is_refused_on_an_existing_group_unless_overwrite(
        stores: Callable[..., Path], tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    shutil.copytree(stores("fp16"), path)
    for option, field in (({"codec": "lz4:5:shuffle"}, "codec"), ({"quantize": "int8"}, "storage_dtype"),
                          ({"pca": 8}, "level_shapes")):
        with pytest.raises(EmbedstoreError, match=f"different .*{field}.*--overwrite"):
            extract_into_store(path, KEY, weights="random", device="cpu", show_progress=False, **option)
    report = extract_into_store(path, KEY, weights="random", device="cpu", show_progress=False, quantize="int8",
                                overwrite=True)
    assert report.tiles_written == N and open_store(path).features(KEY)["level_0"].dtype == np.int8
    again = extract_into_store(path, KEY, weights="random", device="cpu", show_progress=False, quantize="int8")
    assert again.tiles_written == 0  # the same request resumes (nothing left to do), it is not refused
    with pytest.raises(EmbedstoreError, match="different transform"):  # int8 decoded to float32 instead
        extract_into_store(path, KEY, weights="random", device="cpu", show_progress=False, quantize="int8",
                           dtype="fp32")


# --- --quantize int8 ------------------------------------------------------------------------------------------
def test_an_int8_store_is_smaller_than_float16_on_disk(stores: Callable[..., Path]) -> None:
    int8, fp16 = _level_bytes(stores("int8", quantize="int8")), _level_bytes(stores("fp16"))
    assert int8 < 0.75 * fp16


def test_an_int8_group_defaults_to_zstd_5_and_keeps_a_given_codec(stores: Callable[..., Path]) -> None:
    """int8 has half the bytes to compress: its default is one zstd level up (INT8_CODEC); --codec still wins."""
    def blosc(path: Path) -> tuple[str, int, int]:
        group = open_store(path).features(KEY)
        inner = group["level_0"].metadata.codecs[-1].codecs
        b = next(c for c in inner if isinstance(c, BloscCodec))
        return codec_name(group.attrs["codec"]), b.clevel, b.typesize

    assert default_codec("int8") == INT8_CODEC == "zstd:5:bitshuffle" and default_codec(None) == DEFAULT_CODEC
    assert blosc(stores("int8", quantize="int8")) == ("zstd:5:bitshuffle", 5, 1)
    assert blosc(stores("int8-zstd3", quantize="int8", codec="zstd:3")) == ("zstd:3:bitshuffle", 3, 1)
    assert blosc(stores("fp16")) == ("zstd:3:bitshuffle", 3, 2)


def test_int8_features_decode_to_float16_with_the_float16_shapes(stores: Callable[..., Path]) -> None:
    path = stores("int8", quantize="int8")
    group = open_store(path).features(KEY)
    assert group.attrs["storage_dtype"] == "int8" and group["level_0"].fill_value == INT8_FILL
    stored = _levels(path, decoded=False)
    assert all(s.dtype == np.int8 and s.min() >= -127 for s in stored)
    for decoded, plain in zip(_levels(path), _levels(stores("fp16"))):
        assert decoded.dtype == np.float16 and decoded.shape == plain.shape


def test_int8_codes_are_within_half_a_step_of_the_float32_features_on_the_calibration_tiles(
        stores: Callable[..., Path]) -> None:
    path = stores("int8-fp32", quantize="int8", dtype="fp32")
    store = open_store(path)
    calibration = compact.calibration_tiles(store)
    transform = load_transform(store.features(KEY))
    assert transform.dtype == "float32" and calibration.size == 12  # every train tile of 20
    for k, (decoded, exact) in enumerate(zip(_levels(path), _levels(stores("fp32", dtype="fp32")))):
        scale = transform.levels[k].scale.reshape(1, 1, -1, 1, 1)
        error = np.abs(decoded[calibration] - exact[calibration])
        assert decoded.dtype == np.float32
        assert np.all(error <= scale / 2 * (1 + 1e-4) + 1e-6), k
        codes = _levels(path, decoded=False)[k][calibration]
        # the calibration range fills the code range: min and max of every channel reach -127 / 127
        assert np.all(codes.max(axis=(0, 1, 3, 4)) == 127) and np.all(codes.min(axis=(0, 1, 3, 4)) == -127)


def test_a_deleted_shard_of_an_int8_store_is_a_corrupt_tile_not_numbers(stores: Callable[..., Path],
                                                                     tmp_path: Path) -> None:
    path = tmp_path / "int8.zarr"
    shutil.copytree(stores("int8", quantize="int8"), path)
    shard = next(p for p in (path / "features" / KEY / "level_1").rglob("*") if p.is_file() and "/c/" in p.as_posix())
    shard.unlink()
    store = open_store(path)
    with pytest.raises(CorruptTileError, match=r"features/tiny-vit/level_1: tiles? \d+ \(synthetic_he_.*missing"):
        read_features(store.features(KEY), 1, np.arange(4), sample_ids=store.sample_ids)
    problems = verify_store(store, show_progress=False).problems
    assert any("level_1" in p and "missing" in p for p in problems)


def test_int8_stores_extracted_twice_are_identical_and_the_fit_used_only_train_tiles(
        stores: Callable[..., Path], tmp_path: Path) -> None:
    again = _arrays(_extract(tmp_path / "again.zarr", quantize="int8"))
    first = _arrays(stores("int8", quantize="int8"))
    assert again.keys() == first.keys() and "transform/level_0/scale" in first
    for name in first:
        np.testing.assert_array_equal(again[name], first[name], err_msg=name)
    store = open_store(stores("int8", quantize="int8"))
    fitted = store.features(KEY).attrs["transform"]["fitted_on"]
    assert fitted == {"split": "train", "tiles": 12, "tokens": [12 * 16] * 4}
    assert set(store.samples().split[compact.calibration_tiles(store)]) == {"train"}


# --- resume and distributed -----------------------------------------------------------------------------------
def _ingested(path: Path) -> Path:
    ingest(get_dataset("synthetic", None, tile_size=64, n=N), path, tile_size=64, tiles_per_shard=4,
           show_progress=False)
    return path


class _Killed(Exception):
    pass


@pytest.mark.parametrize("blocks_before_kill", [0, 2])
def test_a_killed_int8_run_resumes_with_its_stored_transform_to_the_uninterrupted_arrays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blocks_before_kill: int) -> None:
    encoder = build_encoder(KEY, "random", seed=0, device="cpu")
    whole = _ingested(tmp_path / "whole.zarr")
    run.extract(open_store(whole, "r+"), encoder, device="cpu", quantize="int8", show_progress=False)

    killed = _ingested(tmp_path / "killed.zarr")
    real_write, calls = run.write_block, []

    def write_then_die(group: zarr.Group, index: slice, levels: list[np.ndarray]) -> None:
        if len(calls) == blocks_before_kill:
            raise _Killed
        calls.append(index)
        real_write(group, index, levels)

    monkeypatch.setattr(run, "write_block", write_then_die)
    with pytest.raises(_Killed):
        run.extract(open_store(killed, "r+"), encoder, device="cpu", quantize="int8", writers=1, batch_size=4,
                    show_progress=False)
    monkeypatch.setattr(run, "write_block", real_write)
    assert int(np.asarray(open_store(killed).features(KEY)["done"][:]).sum()) == 4 * blocks_before_kill
    stored_before = _arrays(killed)
    assert "transform/level_0/scale" in stored_before  # written before the first block, kept by the kill

    def no_refit(*args: object, **kwargs: object) -> None:
        raise AssertionError("a resumed run must reuse the stored transform")

    monkeypatch.setattr(compact, "fit_transform", no_refit)
    report = run.extract(open_store(killed, "r+"), encoder, device="cpu", quantize="int8", show_progress=False)
    assert report.tiles_written == N - 4 * blocks_before_kill
    after, expected = _arrays(killed), _arrays(whole)
    assert after.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(after[name], expected[name], err_msg=name)
    for name in (n for n in stored_before if n.startswith("transform/")):
        np.testing.assert_array_equal(after[name], stored_before[name], err_msg=name)


def test_two_workers_write_the_same_int8_arrays_as_one_process(stores: Callable[..., Path], tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    path = _extract(tmp_path / "two.zarr", quantize="int8", workers=2)
    mine, single = _arrays(path), _arrays(stores("int8", quantize="int8"))
    assert mine.keys() == single.keys()
    for name in single:
        np.testing.assert_array_equal(mine[name], single[name], err_msg=name)


# --- --pca K --------------------------------------------------------------------------------------------------
def test_pca_stores_k_channels_equal_to_the_projection_of_the_float32_features(stores: Callable[..., Path]) -> None:
    path = stores("pca-fp32", pca=8, dtype="fp32")
    store = open_store(path)
    group = store.features(KEY)
    assert group.attrs["level_shapes"] == [[8, 4, 4]] * 4 and group.attrs["encoder_level_shapes"] == [[64, 4, 4]] * 4
    transform = load_transform(group)
    calibration = compact.calibration_tiles(store)
    for k, (decoded, exact) in enumerate(zip(_levels(path), _levels(stores("fp32", dtype="fp32")))):
        p = transform.levels[k]
        assert decoded.shape == (N, 1, 8, 4, 4) and p.components.shape == (64, 8)
        expected = np.einsum("tvchw,ck->tvkhw", exact - p.mean.reshape(1, 1, -1, 1, 1), p.components)
        np.testing.assert_allclose(decoded, expected, rtol=1e-4, atol=1e-4)
        # the components are the top eigenvectors of the calibration tokens' covariance, largest first
        tokens = exact[calibration, 0].transpose(0, 2, 3, 1).reshape(-1, 64).astype(np.float64)
        eigenvalues = np.linalg.eigvalsh(np.cov(tokens, rowvar=False))[::-1][:8]
        projected = (tokens - p.mean) @ p.components.astype(np.float64)
        np.testing.assert_allclose(projected.var(axis=0, ddof=1), eigenvalues, rtol=1e-3)
        np.testing.assert_allclose(p.components.T @ p.components, np.eye(8), atol=1e-5)


def test_pca_with_k_at_least_c_keeps_c_channels(stores: Callable[..., Path], tmp_path: Path) -> None:
    group = open_store(_extract(tmp_path / "wide.zarr", pca=100)).features(KEY)
    assert group.attrs["level_shapes"] == [[64, 4, 4]] * 4
    assert load_transform(group).levels[0].components.shape == (64, 64)


def test_pca_and_int8_combine_and_int8_decodes_the_projected_channels(stores: Callable[..., Path]) -> None:
    both = _levels(stores("pca-int8", pca=8, quantize="int8"))
    pca = _levels(stores("pca", pca=8))
    transform = load_transform(open_store(stores("pca-int8", pca=8, quantize="int8")).features(KEY))
    calibration = compact.calibration_tiles(open_store(stores("pca", pca=8)))
    for k, (mine, projected) in enumerate(zip(both, pca)):
        scale = transform.levels[k].scale.reshape(1, 1, -1, 1, 1)
        error = np.abs(mine[calibration].astype(np.float32) - projected[calibration].astype(np.float32))
        assert mine.shape == projected.shape == (N, 1, 8, 4, 4)
        # half a step of int8, plus float16 rounding of both values
        assert np.all(error <= scale / 2 + 2e-3 * np.abs(projected[calibration].astype(np.float32)) + 1e-3), k


def test_a_pca_int8_store_trains_and_evaluates_with_k_channel_decoders(stores: Callable[..., Path],
                                                                       tmp_path: Path) -> None:
    from embedstore.trainer.data.loader import Loader
    from embedstore.trainer.evaluate.run import evaluate
    from embedstore.trainer.fit.train import train

    path = stores("pca-int8", pca=8, quantize="int8")
    loader = Loader(path, "train", ram_cache="off", prefetch=0)
    plain = Loader(stores("pca", pca=8), "train", ram_cache="off", prefetch=0)
    assert loader.tile_bytes(1) == plain.tile_bytes(1)  # RAM holds decoded float16, not int8 codes
    batch = next(iter(loader))
    assert batch.levels[0].shape[1] == 8 and bool(batch.levels[0].isfinite().all())
    report = train(path, tmp_path / "run", epochs=1, device="cpu", show_progress=False)
    assert tuple(report.decoder["level_dims"]) == (8, 8, 8, 8)
    scores = evaluate(tmp_path / "run", workers=1, device="cpu", show_progress=False)
    assert np.isfinite(scores["tile"]["mean"]["bpq"])


def test_a_store_without_a_train_split_refuses_to_fit_in_one_line(tmp_path: Path) -> None:
    path = _ingested(tmp_path / "s.zarr")
    store = open_store(path, "r+")
    store.group["samples/split"][:] = np.array(["test"] * N)
    with pytest.raises(EmbedstoreError, match="'train' tiles"):
        run.extract(open_store(path, "r+"), build_encoder(KEY, "random", seed=0, device="cpu"), device="cpu",
                    pca=4, show_progress=False)


def test_plain_stores_decode_exactly_as_stored(stores: Callable[..., Path]) -> None:
    group = open_store(stores("fp16")).features(KEY)
    assert load_transform(group).identity and group.attrs.get("transform") is None
    for decoded, raw in zip(_levels(stores("fp16")), _levels(stores("fp16"), decoded=False)):
        assert decoded.dtype == raw.dtype == np.float16
        np.testing.assert_array_equal(decoded, raw)


def test_predict_projects_new_images_as_the_pca_int8_group_did_and_needs_its_store(stores: Callable[..., Path],
                                                                                tmp_path: Path) -> None:
    """The run's encoder + the group's transform give the inputs the decoders read from the store."""
    import torch

    from embedstore.extract.compact import decoder_inputs
    from embedstore.store import open_store
    from embedstore.store.features import read_features
    from embedstore.trainer.fit.train import train
    from embedstore.trainer.predict.run_model import load_run_model

    path = tmp_path / "s.zarr"
    shutil.copytree(stores("pca-int8", pca=8, quantize="int8"), path)
    train(path, tmp_path / "run", epochs=1, device="cpu", show_progress=False)
    model = load_run_model(tmp_path / "run", device="cpu")
    assert model.transform is not None
    store = open_store(path)
    index = np.arange(4)
    images = np.asarray(store.group["images"][:4])
    with torch.inference_mode():
        levels = model.encoder(torch.from_numpy(images))
    for k in model.decoder.levels:
        stored = read_features(store.features("tiny-vit"), k, index, sample_ids=store.sample_ids)[:, 0]
        fresh = decoder_inputs(model.transform, levels[k], k).numpy()
        assert fresh.shape == stored.shape and fresh.shape[1] == 8
        np.testing.assert_allclose(fresh, stored.astype(np.float32), rtol=2e-3, atol=2e-3 + float(
            model.transform.transform.levels[k].scale.max()))  # one int8 step: fp32 vs the stored fp-rounded run
    maps = model(images)
    assert maps.shape[:2] == (4, model.channels) and np.isfinite(maps).all()
    shutil.rmtree(path)
    with pytest.raises(EmbedstoreError, match="PCA-reduced features"):
        load_run_model(tmp_path / "run", device="cpu")
