"""Extraction on dask.distributed: same bytes as one process, killed workers' blocks recomputed, no-op reruns."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import zarr

from embedstore.cli.app import main
from embedstore.datasets import get_dataset
from embedstore.errors import EmbedstoreError
from embedstore.extract.pipeline import extract_into_store
from embedstore.store import completeness, ingest, open_store
from embedstore.store.digest import MANIFEST

distributed = pytest.importorskip("distributed")

SLOW_ENCODER = "timm:vit_small_patch16_224"  # ~0.1 s per tile on one CPU thread: slow enough to kill mid-run


def _arrays(path: Path, key: str) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(path / "features" / key), mode="r")
    return {name: np.asarray(group[name][:]) for name in sorted(group.array_keys())}


def _assert_same_arrays(a: Path, b: Path, key: str) -> None:
    left, right = _arrays(a, key), _arrays(b, key)
    assert left.keys() == right.keys() == {"done", "level_0", "level_1", "level_2", "level_3"}
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    """Two single-threaded worker processes, restarted by their nannies when killed."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as local:
        yield local


def _ingested(tmp_path: Path, name: str, n: int, tiles_per_shard: int) -> Path:
    path = tmp_path / name
    ingest(get_dataset("synthetic", None, tile_size=256, n=n), path, tiles_per_shard=tiles_per_shard,
           show_progress=False)
    return path


def test_two_local_workers_write_the_same_bytes_as_one_process(tmp_path: Path, synthetic_store: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "two.zarr"
    code = main(["extract", "--encoder", "tiny-vit", "--dataset", "synthetic", "--option", "n=24",
                 "--weights", "random", "--device", "cpu", "--store", str(path), "--workers", "2", "--quiet"])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0
    assert "wrote 24 tiles" in out
    peaks = re.findall(r"(\d+) (\d+) MiB", out.split("peak RSS per worker:")[1])
    assert {name for name, _ in peaks} == {"0", "1"} and all(int(mib) > 0 for _, mib in peaks)
    _assert_same_arrays(synthetic_store, path, "tiny-vit")
    assert MANIFEST in open_store(path).features("tiny-vit")  # written once every block is committed


def test_a_second_run_on_the_cluster_writes_nothing(tmp_path: Path, synthetic_store: Path,
                                                    cluster: distributed.LocalCluster) -> None:
    path = tmp_path / "copy.zarr"
    shutil.copytree(synthetic_store, path)
    before = _arrays(path, "tiny-vit")
    report = extract_into_store(path, "tiny-vit", weights="random", device="cpu", show_progress=False,
                                scheduler=cluster.scheduler_address)
    assert report.tiles_written == 0 and report.tiles_skipped == report.tiles_total == 24
    after = _arrays(path, "tiny-vit")
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)


def test_eight_views_on_the_cluster_equal_eight_views_in_one_process(tmp_path: Path,
                                                                    cluster: distributed.LocalCluster) -> None:
    source = _ingested(tmp_path, "ingested.zarr", n=6, tiles_per_shard=4)  # blocks of 4 and 2 tiles
    single, spread = tmp_path / "single.zarr", tmp_path / "spread.zarr"
    shutil.copytree(source, single)
    shutil.copytree(source, spread)
    extract_into_store(single, "tiny-vit", weights="random", device="cpu", views=8, show_progress=False)
    extract_into_store(spread, "tiny-vit", weights="random", device="cpu", views=8, show_progress=False,
                       scheduler=cluster.scheduler_address)
    assert np.asarray(open_store(spread).features("tiny-vit")["level_2"]).shape[:2] == (6, 8)
    _assert_same_arrays(single, spread, "tiny-vit")


def test_a_run_frees_its_encoder_on_every_worker(tmp_path: Path, synthetic_store: Path,
                                                 cluster: distributed.LocalCluster) -> None:
    path = tmp_path / "copy.zarr"
    shutil.copytree(synthetic_store, path)
    extract_into_store(path, "tiny-vit", weights="random", seed=3, device="cpu", overwrite=True,
                       show_progress=False, scheduler=cluster.scheduler_address)
    with distributed.Client(cluster) as client:
        plugins = client.run(lambda dask_worker: [name for name in dask_worker.plugins if "embedstore" in name])
    assert len(plugins) == 2 and all(names == [] for names in plugins.values())
    assert completeness(open_store(path).features("tiny-vit")) == (24, 24)


@pytest.mark.parametrize(("workers", "scheduler", "option"), [
    (0, None, "--workers 0"),
    (2, "tcp://127.0.0.1:8786", "not both"),
    (None, "127.0.0.1:8786", "--scheduler 127.0.0.1:8786"),
])
def test_bad_cluster_options_are_refused_before_any_work(tmp_path: Path, workers: int | None,
                                                         scheduler: str | None, option: str) -> None:
    path = tmp_path / "never.zarr"
    with pytest.raises(EmbedstoreError, match=re.escape(option)):
        extract_into_store(path, "tiny-vit", dataset="synthetic", options={"n": 2}, weights="random",
                           device="cpu", workers=workers, scheduler=scheduler, show_progress=False)
    assert not path.exists()


def test_a_killed_worker_leaves_a_complete_store_identical_to_one_process(
        tmp_path: Path, cluster: distributed.LocalCluster) -> None:
    source = _ingested(tmp_path, "ingested.zarr", n=48, tiles_per_shard=8)  # 6 blocks of 8 tiles
    single, spread = tmp_path / "single.zarr", tmp_path / "spread.zarr"
    shutil.copytree(source, single)
    shutil.copytree(source, spread)
    key = "timm-vit_small_patch16_224"
    extract_into_store(single, SLOW_ENCODER, weights="random", device="cpu", batch_size=4, show_progress=False)

    with distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(extract_into_store, spread, SLOW_ENCODER, weights="random", device="cpu",
                          batch_size=4, show_progress=False, scheduler=cluster.scheduler_address)
        committed, deadline = 0, time.time() + 180
        while time.time() < deadline and not run.done():
            try:
                committed = int(zarr.open_array(str(spread / "features" / key / "done"), mode="r")[:].sum())
            except (FileNotFoundError, KeyError, ValueError):
                committed = 0
            if committed >= 8:
                break
            time.sleep(0.02)
        assert not run.done() and 8 <= committed < 48, "extraction finished before a worker could be killed"
        os.kill(victim, signal.SIGKILL)
        run.result(timeout=300)

    with distributed.Client(cluster) as client:
        assert victim not in client.run(os.getpid).values()  # the worker really died (its nanny restarted it)
    assert completeness(open_store(spread).features(key)) == (48, 48)
    _assert_same_arrays(single, spread, key)
    again = extract_into_store(spread, SLOW_ENCODER, weights="random", device="cpu", batch_size=4,
                               show_progress=False, scheduler=cluster.scheduler_address)
    assert again.tiles_written == 0


def test_a_user_error_on_a_worker_reaches_the_driver_as_one(tmp_path: Path, synthetic_store: Path,
                                                            cluster: distributed.LocalCluster) -> None:
    path = tmp_path / "copy.zarr"
    shutil.copytree(synthetic_store, path)
    with pytest.raises(EmbedstoreError, match="no-such-weights.safetensors does not exist"):
        extract_into_store(path, "tiny-vit", weights=str(tmp_path / "no-such-weights.safetensors"),
                           device="cpu", show_progress=False, scheduler=cluster.scheduler_address)


def test_the_cli_prints_a_bad_workers_count_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extract", "--encoder", "tiny-vit", "--dataset", "synthetic", "--workers", "0"]) == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--workers 0" in lines[0]


def test_workers_named_0_to_n_are_pinned_round_robin_to_the_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from embedstore.extract.distributed import pinned_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [pinned_device("cuda", str(k)) for k in range(6)] == [torch.device("cuda", k % 4) for k in range(6)]
    assert pinned_device("auto", "5") == torch.device("cuda", 1)
    assert pinned_device("cuda:2", "5") == torch.device("cuda", 2)  # an explicit device is kept
    assert pinned_device("cuda", "SLURMCluster-3") == torch.device("cuda")  # named elsewhere: its visible GPU
    assert pinned_device("cpu", "1") == torch.device("cpu")
