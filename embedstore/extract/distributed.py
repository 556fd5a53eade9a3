"""Extraction scaled out on dask.distributed: one task per shard-aligned block, one encoder per worker.

The driver (the process running `embed extract --workers N` or `--scheduler URL`) holds the store lock,
creates the feature group, has one worker fit and write the ``--pca`` / ``--quantize`` transform when the
group needs one and has none yet (:func:`fit_group_transform`), submits one task per uncommitted block of :meth:`Store.blocks` (a block is one
shard of every level plus one ``done`` chunk, so no two tasks ever write the same file) and writes the
group's manifest at the end. Each worker process builds the encoder once, on its first task, through the
:class:`EncoderHost` worker plugin (no model travels inside a task). A task re-reads its block's ``done``
marker, encodes the tiles with :func:`embedstore.extract.run.encode_batch` and commits the block with
:func:`embedstore.extract.run.write_block`, exactly as a single-process run does. When a worker dies the
scheduler reruns its tasks elsewhere; a rerun of a block that was already committed finds the marker set
and writes nothing, so the markers stay the single source of truth.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import resource
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from distributed import Client, KilledWorker, LocalCluster, WorkerPlugin, as_completed, get_worker

from embedstore.device import resolve_device
from embedstore.extract.compact import DeviceTransform, ensure_transform
from embedstore.encoders import FrozenEncoder, build_encoder
from embedstore.errors import EmbedstoreError
from embedstore.extract.precision import resolve_dtype, storage_dtype
from embedstore.extract.run import (
    ExtractReport,
    encode_batch,
    group_attrs,
    open_pending,
    tile_views,
    write_block,
)
from embedstore.progress import progress_bar
from embedstore.store import Store, open_store
from embedstore.store.digest import write_manifest
from embedstore.store.features import load_transform, transform_committed

PLUGIN = "embedstore-encoder"
"""Prefix of the worker plugin's name; the rest says which run it serves (:func:`plugin_name`)."""


def pinned_device(device: str, worker_name: str) -> torch.device:
    """The worker's device: a bare ``cuda`` (or ``auto`` on a GPU machine) becomes ``cuda:<name mod GPUs>``
    for workers named 0..N-1 (a :class:`LocalCluster`), so N workers on N GPUs use one GPU each."""
    dev = resolve_device(device)
    count = torch.cuda.device_count() if dev.type == "cuda" else 0
    if dev.index is None and count > 1 and worker_name.isdigit():
        return torch.device("cuda", int(worker_name) % count)
    return dev


def plugin_name(location: str, encoder: str, weights: str, seed: int, device: str) -> str:
    """One plugin per run (store, encoder, weights, seed, device): runs of several drivers that share a
    cluster never swap each other's encoder, and each run removes its own at the end."""
    digest = hashlib.sha256(json.dumps([location, encoder, weights, seed, device]).encode()).hexdigest()
    return f"{PLUGIN}-{digest[:16]}"


class EncoderHost(WorkerPlugin):
    """Worker plugin holding one frozen encoder per worker process, built on first use and kept.

    Registered once per run by the driver and removed (the model freed) when the run ends; the scheduler
    also installs it on workers that join or are restarted meanwhile. Building happens in the first task
    (not in ``setup``), so a bad weights file or a missing hub download comes back to the driver as that
    task's error.
    """

    def __init__(self, name: str, encoder: str, weights: str, seed: int, device: str,
                 torch_threads: int | None) -> None:
        self.name = name
        self.encoder_name, self.weights, self.seed = encoder, weights, seed
        self.device_option, self.torch_threads = device, torch_threads
        self.worker_name = ""
        self._encoder: FrozenEncoder | None = None
        self._device: torch.device | None = None
        self._lock: threading.Lock | None = None

    def setup(self, worker: Any) -> None:
        """Runs on each worker when registered or started: its name (the GPU it gets) and torch threads."""
        self.worker_name = str(worker.name)
        self._lock = threading.Lock()
        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)

    def teardown(self, worker: Any) -> None:
        """Runs when the driver removes the plugin or the worker closes: free the model."""
        self._encoder = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def get(self) -> tuple[FrozenEncoder, torch.device]:
        """This worker's encoder (on its pinned device) and that device; built on the first call."""
        assert self._lock is not None, "EncoderHost used before setup"
        with self._lock:
            if self._encoder is None:
                dev = pinned_device(self.device_option, self.worker_name)
                if dev.type == "cuda":
                    torch.cuda.set_device(dev)
                self._encoder = build_encoder(self.encoder_name, self.weights, seed=self.seed, device=dev)
                self._device = dev
            assert self._device is not None
            return self._encoder, self._device


@dataclass(frozen=True)
class BlockResult:
    """What one block task did: tiles written (0 when the block was already committed) and the
    worker's peak resident bytes so far."""

    worker: str
    tiles_written: int
    encoder_seconds: float
    peak_rss: int


def _host(plugin: str) -> EncoderHost:
    return get_worker().plugins[plugin]


def peak_rss() -> int:
    """Peak resident bytes of this process since it started (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def worker_group_attrs(plugin: str, tile_size: int, views: int, dtype: str, *, codec: str | None = None,
                       pca: int | None = None, quantize: str | None = None) -> dict[str, Any]:
    """Task: the feature group's attributes as a worker sees them (its encoder, device and dtype)."""
    encoder, dev = _host(plugin).get()
    return group_attrs(encoder, tile_size, views, resolve_dtype(dtype, dev), storage_dtype(dtype), codec=codec,
                       pca=pca, quantize=quantize)


def fit_group_transform(plugin: str, location: str, key: str, *, batch_size: int, dtype: str) -> None:
    """Task: fit the group's ``--pca`` / ``--quantize`` transform with this worker's encoder and write it into
    the group (:func:`embedstore.extract.compact.ensure_transform`); the driver waits for it before it submits
    any block, so every block task finds the same stored parameters."""
    encoder, dev = _host(plugin).get()
    store = open_store(location, mode="r+")
    ensure_transform(store, store.group[f"features/{key}"], encoder, dev=dev, dtype=resolve_dtype(dtype, dev),
                     batch_size=batch_size)


def extract_block(plugin: str, location: str, key: str, index: slice, *, batch_size: int,
                  dtype: str) -> BlockResult:
    """Task: encode and commit one block of tiles unless its ``done`` marker is already set.

    ``index`` is one of :meth:`Store.blocks`; the levels are written (T, V, C, h, w) as the single-process
    run writes them, then the block's ``done`` chunk.
    """
    host = _host(plugin)
    store = open_store(location, mode="r+")
    group = store.group[f"features/{key}"]
    if bool(np.asarray(group["done"][index]).all()):
        return BlockResult(host.worker_name, 0, 0.0, peak_rss())
    encoder, dev = host.get()
    if encoder.fingerprint != group.attrs["fingerprint"]:  # never write one encoder's features into another's
        raise EmbedstoreError(f"worker {host.worker_name} holds weights {encoder.fingerprint}, features/{key} "
                              f"was started with {group.attrs['fingerprint']}")
    compute = resolve_dtype(dtype, dev)
    if compute != group.attrs["compute_dtype"]:
        raise EmbedstoreError(f"worker {host.worker_name} computes in {compute} on {dev}, the group was started "
                              f"in {group.attrs['compute_dtype']}: give every worker the same device kind or --dtype")
    views = int(group.attrs["views"])
    np_dtype = np.dtype(group.attrs["storage_dtype"])
    if not transform_committed(group):  # the driver runs fit_group_transform first: never fit here
        raise EmbedstoreError(f"features/{key}: its transform was not written before the blocks were submitted")
    transform = load_transform(group)
    on_device = None if transform.identity else DeviceTransform(transform, dev)
    items = np.ascontiguousarray(tile_views(np.asarray(store.group["images"][index]), views))
    start = time.perf_counter()
    flat: list[np.ndarray] = []  # per level (T*V, C, h, w), filled batch by batch
    for first in range(0, len(items), batch_size):
        arrays = encode_batch(encoder, items[first:first + batch_size], dev, compute, np_dtype, on_device)
        flat = flat or [np.empty((len(items), *a.shape[1:]), dtype=a.dtype) for a in arrays]
        for level, array in zip(flat, arrays):
            level[first:first + len(array)] = array
    seconds = time.perf_counter() - start
    n = index.stop - index.start
    write_block(group, index, [level.reshape(n, views, *level.shape[1:]) for level in flat])
    return BlockResult(host.worker_name, n, seconds, peak_rss())


@contextlib.contextmanager
def cluster_client(workers: int | None, scheduler: str | None) -> Iterator[tuple[Client, int | None]]:
    """A client of the cluster at ``scheduler``, or of a fresh :class:`LocalCluster` of ``workers`` processes
    (one task at a time each), closed on exit. Also yields the torch threads each worker should use
    (the machine's cores shared among local workers; None: leave a remote worker's setting)."""
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as err:
            raise EmbedstoreError(f"--scheduler {scheduler}: cannot reach the dask scheduler ({err})") from None
        with client:
            yield client, None
        return
    assert workers is not None and workers >= 1
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client, max(1, (os.cpu_count() or 1) // workers)


def extract_on_cluster(store: Store, encoder: str, *, weights: str = "hub", seed: int = 0, batch_size: int = 16,
                       device: str = "auto", dtype: str = "auto", views: int = 1, overwrite: bool = False,
                       workers: int | None = None, scheduler: str | None = None, codec: str | None = None,
                       pca: int | None = None, quantize: str | None = None,
                       show_progress: bool = True) -> ExtractReport:
    """Like :func:`embedstore.extract.run.extract`, with the blocks computed on a dask cluster.

    Every worker must reach the store at the same path (a shared file system) and the weights (the HF
    cache, or the same ``weights`` file path). The caller holds the store lock. The report also gives the
    peak resident bytes of each worker process (``worker_peak_rss``). ``codec``, ``pca`` and ``quantize``
    as in the single-process run; the transform is fitted by one task on a worker, before any block.
    """
    if store.read_only:
        raise EmbedstoreError(f"{store.location}: store is opened read-only; extract into a local copy")
    if not store.ingest_complete:
        raise EmbedstoreError(f"{store.location}: dataset ingest is incomplete; run extract with --dataset again")
    location = store.location if "://" in store.location else str(Path(store.location).resolve())  # no relative paths
    if weights not in ("hub", "random"):
        weights = str(Path(weights).expanduser().resolve())
    plugin = plugin_name(location, encoder, weights, seed, device)
    with cluster_client(workers, scheduler) as (client, torch_threads):
        client.register_plugin(EncoderHost(plugin, encoder, weights, seed, device, torch_threads), name=plugin)
        try:
            return _run_blocks(client, plugin, store, location, views=views, dtype=dtype, batch_size=batch_size,
                               overwrite=overwrite, show_progress=show_progress,
                               compact={"codec": codec, "pca": pca, "quantize": quantize})
        finally:
            with contextlib.suppress(OSError):  # a lost scheduler takes the plugin with it
                client.unregister_worker_plugin(plugin)


def _run_blocks(client: Client, plugin: str, store: Store, location: str, *, views: int, dtype: str,
                batch_size: int, overwrite: bool, show_progress: bool, compact: dict[str, Any]) -> ExtractReport:
    """Create the group from a worker's attributes, fit its transform on a worker (when it has none yet), run
    every uncommitted block, write the manifest. ``compact``: the codec, pca and quantize options."""
    attrs = client.submit(worker_group_attrs, plugin, store.tile_size, views, dtype, **compact, pure=False).result()
    group, pending, report = open_pending(store, attrs, overwrite)
    key = report.key
    if not pending:
        return report
    if not transform_committed(group):
        client.submit(fit_group_transform, plugin, location, key, batch_size=batch_size, dtype=dtype,
                      pure=False).result()
    start = time.perf_counter()
    futures = {client.submit(extract_block, plugin, location, key, b, batch_size=batch_size, dtype=dtype,
                             key=f"embedstore-extract-{plugin}-{b.start}", pure=False): b for b in pending}
    with progress_bar(f"extract {key}", total=store.n_samples, unit="tiles", enabled=show_progress,
                      done=report.tiles_skipped) as advance:
        for future in as_completed(futures):
            block = futures[future]
            try:
                result: BlockResult = future.result()
            except KilledWorker:
                raise EmbedstoreError(f"{store.location}: tiles {block.start}..{block.stop - 1} killed every "
                                      "worker that ran them (out of memory?); committed blocks are kept and "
                                      "the same command resumes") from None
            report.tiles_written += result.tiles_written
            report.encoder_seconds += result.encoder_seconds
            rss = report.worker_peak_rss
            rss[result.worker] = max(rss.get(result.worker, 0), result.peak_rss)
            advance(block.stop - block.start)
    report.seconds = time.perf_counter() - start
    if bool(np.asarray(group["done"][:]).all()):
        write_manifest(store.location, f"features/{key}")  # after the last marker: the group's hashes
    return report
