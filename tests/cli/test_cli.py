"""The `embed` command line: one-line errors without tracebacks, and the commands on a real store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def embed(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "embedstore.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})


def assert_one_line_error(result: subprocess.CompletedProcess, *names: str) -> None:
    assert result.returncode != 0
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for name in names:
        assert name in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["extract", "--encoder", "no-such-encoder", "--dataset", "synthetic"], ["no-such-encoder"]),
        (["extract", "--encoder", "tiny-vit", "--dataset", "no-such-dataset"], ["no-such-dataset"]),
        (["extract", "--encoder", "tiny-vit", "--dataset", "consep", "--data-dir", "/nonexistent/consep"],
         ["/nonexistent/consep"]),
        (["extract", "--encoder", "tiny-vit", "--dataset", "synthetic", "--no-such-flag"], ["--no-such-flag"]),
        (["extract", "--encoder", "tiny-vit", "--dataset", "synthetic", "--views", "3"], ["--views"]),
        (["info", "/nonexistent/store.zarr"], ["/nonexistent/store.zarr"]),
        (["train", "--store", "/nonexistent/store.zarr"], ["/nonexistent/store.zarr"]),
        (["train", "--store", "x.zarr", "--seeds", "0,a"], ["--seeds"]),
        (["train", "--store", "x.zarr", "--ram-cache", "sometimes"], ["--ram-cache", "sometimes"]),
        (["train", "--store", "x.zarr", "--decoder", "huge"], ["--decoder", "huge"]),
        (["train", "--store", "x.zarr", "--msge-maps", "none"], ["--msge-maps", "none"]),
        (["train", "--store", "x.zarr", "--levels", "3,2"], ["--levels", "3,2"]),
        (["train", "--store", "x.zarr", "--variant", "levels=2:width=9"], ["--variant", "width=9"]),
        (["train", "--store", "x.zarr", "--variant", "levels=2", "--levels", "3"], ["--levels", "--variant"]),
        (["extract", "--encoder", "tiny-vit", "--dataset", "synthetic", "--dtype", "fp8"], ["--dtype", "fp8"]),
        (["bench", "train", "--decoder", "huge"], ["--decoder", "huge"]),
    ],
)
def test_bad_input_gives_one_line_error_naming_it(args: list[str], names: list[str], tmp_path: Path) -> None:
    assert_one_line_error(embed(*args, cwd=tmp_path), *names)


def test_info_describes_dataset_splits_and_encoders(synthetic_store: Path) -> None:
    result = embed("info", str(synthetic_store))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "synthetic" in out and "24 tiles" in out and "train" in out
    assert "tiny-vit" in out and "random:0" in out and "24/24" in out and "float16" in out


def test_verify_reads_back_a_healthy_store_and_flags_a_corrupt_shard(synthetic_store: Path, tmp_path: Path) -> None:
    import shutil

    assert embed("verify", "--quiet", str(synthetic_store)).returncode == 0
    broken = tmp_path / "broken.zarr"
    shutil.copytree(synthetic_store, broken)
    shard = next((broken / "features" / "tiny-vit" / "level_0" / "c").rglob("*"))
    while shard.is_dir():
        shard = next(shard.iterdir())
    shard.write_bytes(shard.read_bytes()[:100])
    result = embed("verify", "--quiet", str(broken))
    assert result.returncode == 1 and "level_0" in result.stdout


def test_encoders_and_datasets_list_the_registry() -> None:
    enc = embed("encoders")
    assert enc.returncode == 0 and all(k in enc.stdout for k in ("uni", "virchow2", "gigapath", "convnext-b-22k"))
    ds = embed("datasets")
    assert ds.returncode == 0 and all(k in ds.stdout for k in ("pannuke", "conic", "cytodark0", "synthetic"))


def test_train_writes_a_run_with_the_chosen_loss_options(synthetic_store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = embed("train", "--store", str(synthetic_store), "--epochs", "1", "--seeds", "0,1", "--quiet",
                   "--msge-maps", "diagonals", "--clip-norm", "0.001", "--data-seed", "3", "--out", str(run))
    assert result.returncode == 0, result.stderr
    config = json.loads((run / "config.json").read_text())
    assert (config["msge_maps"], config["clip_norm"], config["data_seed"], config["seeds"]) == ("diagonals", 0.001, 3, [0, 1])
    assert (run / "seed_1" / "best.safetensors").is_file()
    assert "trainable parameters" in result.stdout



def test_train_variants_write_one_run_folder_each(synthetic_store: Path, tmp_path: Path) -> None:
    result = embed("train", "--store", str(synthetic_store), "--epochs", "1", "--quiet", "--out", str(tmp_path),
                   "--variant", "levels=3", "--variant", "levels=none:decoder=cisca:name=floor")
    assert result.returncode == 0, result.stderr
    levels = {name: json.loads((tmp_path / name / "config.json").read_text())["decoder"]
              for name in ("lite-L3", "floor")}
    assert (levels["lite-L3"]["levels"], levels["floor"]["levels"], levels["floor"]["preset"]) == ([3], [], "cisca")
    assert "variant lite-L3 (decoder lite)" in result.stdout and "variant floor (decoder cisca)" in result.stdout
    assert (tmp_path / "floor" / "seed_0" / "best.safetensors").is_file()


def test_train_levels_none_trains_the_no_encoder_baseline(synthetic_store: Path, tmp_path: Path) -> None:
    result = embed("train", "--store", str(synthetic_store), "--levels", "none", "--dry-run")
    assert result.returncode == 0, result.stderr
    full = embed("train", "--store", str(synthetic_store), "--dry-run")
    count = [int(r.stdout.split(":")[1].split()[0].replace(",", "")) for r in (result, full)]
    assert 0 < count[0] < count[1]

def test_help_lists_the_choices_of_every_choice_option() -> None:
    train = embed("train", "--help")
    assert train.returncode == 0
    for choices in ("<auto|on|off>", "<lite|cisca>", "<all|diagonals>"):
        assert choices in train.stdout, choices
    assert "<auto|fp16|bf16|fp32>" in embed("extract", "--help").stdout
    assert "<lite|cisca>" in embed("bench", "train", "--help").stdout
