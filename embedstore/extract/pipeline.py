"""Dataset -> store -> features in one call: what `embed extract` runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from embedstore.datasets import dataset_options, get_dataset
from embedstore.encoders import build_encoder, get_spec
from embedstore.errors import EmbedstoreError
from embedstore.device import resolve_device
from embedstore.extract.run import ExtractReport, check_options, extract
from embedstore.store import Store, ingest, open_store, store_exists
from embedstore.store.lock import store_lock


def default_store_path(dataset: str, options: dict[str, Any]) -> Path:
    """Where `embed extract` puts a dataset's store when no ``--store`` is given: ``./<dataset>[-<mag>].zarr``."""
    suffix = f"-{options['magnification']}" if "magnification" in options else ""
    return Path(f"{dataset}{suffix}.zarr")


def ingest_dataset(location: str | Path, dataset: str, *, data_dir: str | Path | None = None,
                   options: dict[str, Any] | None = None, tile_size: int = 256, stride: int | None = None,
                   show_progress: bool = True) -> Store:
    """Tile a dataset from its native layout into the store (a no-op when already ingested)."""
    options = dataset_options(dataset, options or {})  # typed values: the CLI's "false" is a plan's false
    adapter = get_dataset(dataset, data_dir, tile_size=tile_size, stride=stride, **options)
    signature = {**options, "stride": stride if stride is not None else tile_size}
    return ingest(adapter, location, tile_size=tile_size, options=signature, show_progress=show_progress)


def check_cluster_options(workers: int | None, scheduler: str | None) -> None:
    """Refuse bad ``--workers`` / ``--scheduler`` values, and both at once, before any work starts."""
    if workers is not None and scheduler is not None:
        raise EmbedstoreError("give --workers (start a local dask cluster) or --scheduler (use a running one), "
                              "not both")
    if workers is not None and workers < 1:
        raise EmbedstoreError(f"--workers {workers}: must be >= 1")
    if scheduler is not None and "://" not in scheduler:
        raise EmbedstoreError(f"--scheduler {scheduler}: expected an address such as tcp://HOST:8786")
    if workers is not None or scheduler is not None:
        if importlib.util.find_spec("distributed") is None:
            raise EmbedstoreError("--workers / --scheduler need dask.distributed: pip install distributed")


def extract_into_store(location: str | Path, encoder: str, *, dataset: str | None = None,
                       data_dir: str | Path | None = None, options: dict[str, Any] | None = None,
                       tile_size: int = 256, stride: int | None = None, weights: str = "hub", seed: int = 0,
                       batch_size: int = 16, device: str = "auto", dtype: str = "auto", views: int = 1,
                       overwrite: bool = False, show_progress: bool = True, workers: int | None = None,
                       scheduler: str | None = None, codec: str | None = None, pca: int | None = None,
                       quantize: str | None = None) -> ExtractReport:
    """Ingest ``dataset`` if needed, then write ``encoder``'s levels for every uncommitted tile.

    One process writes a store at a time (:func:`embedstore.store.lock.store_lock`): a second one is
    refused in one line, before any work. ``workers`` (a local dask cluster of that many processes) or
    ``scheduler`` (``tcp://HOST:PORT`` of a running one) compute the features on a dask cluster
    (:mod:`embedstore.extract.distributed`); ingest always runs here. ``codec``, ``pca`` and ``quantize``
    make smaller feature groups (see :func:`embedstore.extract.run.extract`).
    """
    spec = get_spec(encoder)  # fail fast on an unknown encoder or option before any ingest work
    if "://" in str(location):
        from embedstore.share.remote import check_writable  # share imports store: imported where used

        check_writable(str(location))
    check_cluster_options(workers, scheduler)
    # the workers of a remote cluster resolve the device themselves: it need not exist on this machine
    check_options(views=views, batch_size=batch_size, device=device if scheduler is None else "cpu", dtype=dtype,
                  codec=codec, pca=pca, quantize=quantize)
    if dataset is None and not (store_exists(location) if "://" in str(location) else Path(location).exists()):
        raise EmbedstoreError(f"{location}: no such store; give --dataset to create it")
    with store_lock(location):
        if dataset is not None:
            store = ingest_dataset(location, dataset, data_dir=data_dir, options=options, tile_size=tile_size,
                                   stride=stride, show_progress=show_progress)
        else:
            store = open_store(location, mode="r+")
        if workers is not None or scheduler is not None:
            from embedstore.extract.distributed import extract_on_cluster

            return extract_on_cluster(store, encoder, weights=str(weights), seed=seed, batch_size=batch_size,
                                      device=device, dtype=dtype, views=views, overwrite=overwrite,
                                      workers=workers, scheduler=scheduler, codec=codec, pca=pca,
                                      quantize=quantize, show_progress=show_progress)
        model = build_encoder(spec, weights, seed=seed, device=resolve_device(device))
        return extract(store, model, batch_size=batch_size, device=device, dtype=dtype, views=views,
                       overwrite=overwrite, codec=codec, pca=pca, quantize=quantize, show_progress=show_progress)
