"""Run a frozen encoder once over a store's tiles and write its four levels, resumably.

Data flow: a background thread (:func:`embedstore.threads.background`) decodes whole image shards (and
makes the dihedral views) ahead of the encoder; the main thread runs the encoder in batches that may
span shards; finished shards go to a writer pool, one writer per shard, which writes the levels and then
that shard's ``done`` chunk. A run killed at any moment leaves every shard either committed (``done``
set) or recomputed on resume.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from typing import Any

import numpy as np
import torch
import zarr

from embedstore import __version__
from embedstore.device import resolve_device
from embedstore.encoders import FrozenEncoder
from embedstore.errors import EmbedstoreError
from embedstore.imaging.dihedral import dihedral
from embedstore.extract.precision import resolve_dtype, storage_dtype
from embedstore.progress import progress_bar
from embedstore.encoders.licence import licence_record
from embedstore.extract.compact import DeviceTransform, check_compact_options, ensure_transform, stored_shapes
from embedstore.store import CHUNK_CODECS, Store, feature_key
from embedstore.store.codecs import codec_name, codec_record, codecs_of_record, default_codec, parse_codec
from embedstore.store.features import INT8_FILL, transform_request
from embedstore.store.digest import MANIFEST, write_manifest
from embedstore.threads import background

COMPUTE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
"""torch dtype of each resolved ``--dtype`` (see :data:`embedstore.extract.precision.ComputeDtype`)."""
FP16_MAX = 65504.0


def check_options(*, views: int, batch_size: int, device: str, dtype: str, codec: str | None = None,
                  pca: int | None = None, quantize: str | None = None) -> None:
    """Reject bad extraction options before any ingest or model loading work starts."""
    if codec is not None:
        parse_codec(codec)
    check_compact_options(pca, quantize)
    if views not in (1, 8):
        raise EmbedstoreError(f"--views {views}: expected 1 or 8")
    if batch_size < 1:
        raise EmbedstoreError(f"--batch-size {batch_size}: must be >= 1")
    resolve_dtype(dtype, resolve_device(device))


@dataclass
class ExtractReport:
    """What one extraction run did, for the CLI summary and the benchmark."""

    key: str
    tiles_total: int
    tiles_skipped: int
    tiles_written: int = 0
    seconds: float = 0.0
    encoder_seconds: float = 0.0
    worker_peak_rss: dict[str, int] = field(default_factory=dict)
    """Peak resident bytes of each worker process (distributed runs only), by worker name."""

    @property
    def tiles_per_s(self) -> float:
        return self.tiles_written / self.seconds if self.seconds else 0.0


def group_attrs(encoder: FrozenEncoder, tile_size: int, views: int, dtype: str, stored: str, *,
                codec: str | None = None, pca: int | None = None, quantize: str | None = None) -> dict[str, Any]:
    """Everything needed to reproduce or refuse to mix features: spec, weights (source and sha256
    fingerprint), preprocessing, codec, transform, licence, date and versions.

    ``stored`` is the float dtype features decode to; with ``quantize="int8"`` the arrays hold int8 codes
    (``storage_dtype`` int8) and ``transform.dtype`` keeps ``stored``. ``level_shapes`` are the stored
    (C, h, w), C = min(pca, C) under PCA; ``encoder_level_shapes`` the encoder's own.
    """
    quantize = None if quantize == "none" else quantize
    check_compact_options(pca, quantize)
    codec = default_codec(quantize) if codec is None else codec
    native = encoder.level_shapes(tile_size)
    shapes = stored_shapes(native, pca)
    compact = pca is not None or quantize is not None
    return {
        "encoder": encoder.spec.to_dict(),
        "fingerprint": encoder.fingerprint,
        "weights_source": encoder.weights_source,
        "licence": licence_record(encoder.spec),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "codec": codec_record(parse_codec(codec)),
        "tile_size": tile_size,
        "views": views,
        "storage_dtype": "int8" if quantize == "int8" else stored,
        "compute_dtype": dtype,
        "level_shapes": [list(s) for s in shapes],
        "encoder_level_shapes": [list(s) for s in native],
        "transform": {"pca": pca, "quantize": quantize, "dtype": stored, "fitted_on": None} if compact else None,
        "library_versions": {
            "embedstore": __version__,
            "torch": torch.__version__,
            "timm": version("timm"),
            "zarr": zarr.__version__,
        },
    }


_IDENTITY_FIELDS = ("encoder", "fingerprint", "tile_size", "views", "storage_dtype", "level_shapes", "codec",
                    "transform")


def _identity(attrs: dict[str, Any], name: str) -> Any:
    """The value of an identity field that must match to mix runs: the codec as ``--codec`` spells it and the
    transform as asked for (not when it was fitted); groups from before either field read as the defaults."""
    if name == "codec":
        return codec_name(attrs.get("codec"))
    if name == "transform":
        return transform_request(attrs.get("transform"))
    return attrs.get(name)


def open_pending(store: Store, attrs: dict[str, Any], overwrite: bool) -> tuple[zarr.Group, list[slice], ExtractReport]:
    """The feature group of ``attrs`` (created or reopened, see :func:`prepare_group`), its uncommitted
    blocks, and a report that counts the committed tiles. With nothing left to do, a group that a killed run
    left without its manifest gets it here."""
    key = feature_key(attrs["encoder"]["key"])
    group = prepare_group(store, key, attrs, overwrite)
    done = np.asarray(group["done"][:]).all(axis=1)
    pending = [b for b in store.blocks() if not done[b].all()]
    report = ExtractReport(key=key, tiles_total=store.n_samples,
                           tiles_skipped=store.n_samples - sum(b.stop - b.start for b in pending))
    if not pending:
        write_manifest_once(store, key)
    return group, pending, report


def prepare_group(store: Store, key: str, attrs: dict[str, Any], overwrite: bool) -> zarr.Group:
    """Create the feature group, or reopen a compatible one; a different encoder/weights is refused."""
    n, t, v = store.n_samples, store.tiles_per_shard, attrs["views"]
    if key in store.feature_keys():
        group = store.group[f"features/{key}"]
        old = dict(group.attrs)
        diff = [f for f in _IDENTITY_FIELDS if _identity(old, f) != _identity(attrs, f)]
        if not diff:
            return group
        if not overwrite:
            raise EmbedstoreError(
                f"{store.location}: features/{key} was written with a different "
                f"{', '.join(diff)} (stored fingerprint {old.get('fingerprint')}, now {attrs['fingerprint']}); "
                "pass --overwrite to replace it"
            )
        del store.group[f"features/{key}"]
    group = store.group.require_group(f"features/{key}")
    codecs = codecs_of_record(attrs["codec"])
    # a missing chunk reads as the fill value, refused by checked reads: NaN, or -128 for int8 codes
    fill = INT8_FILL if attrs["storage_dtype"] == "int8" else float("nan")
    for k, (c, h, w) in enumerate(attrs["level_shapes"]):
        group.create_array(f"level_{k}", shape=(n, v, c, h, w), dtype=attrs["storage_dtype"],
                           chunks=(1, v, c, h, w), shards=(t, v, c, h, w), compressors=codecs, fill_value=fill)
    group.create_array("done", shape=(n, v), dtype=bool, chunks=(t, v), fill_value=False, compressors=CHUNK_CODECS)
    group.attrs.update(attrs)
    return group


@dataclass
class _Block:
    """Feature buffer of one shard: filled by the encoder loop, then written whole by one writer."""

    index: slice
    views: int
    levels: list[np.ndarray]
    filled: int = 0
    n_items: int = field(init=False)

    def __post_init__(self) -> None:
        self.n_items = (self.index.stop - self.index.start) * self.views


def tile_views(images: np.ndarray, views: int) -> np.ndarray:
    """(T, S, S, 3) -> (T*V, S, S, 3), tile-major then view, view t = dihedral transform t."""
    if views == 1:
        return images
    return np.stack([dihedral(img, t) for img in images for t in range(views)])


def _shard_images(store: Store, blocks: list[slice], views: int) -> Iterator[tuple[slice, np.ndarray]]:
    """Whole image shards with their views, in order: what the background reader decodes ahead."""
    images = store.group["images"]
    for block in blocks:
        yield block, np.ascontiguousarray(tile_views(images[block], views))


def _batches(blocks: Iterator[tuple[_Block, np.ndarray]], batch_size: int
             ) -> Iterator[tuple[list[tuple[_Block, int, int]], np.ndarray]]:
    """Re-cut a stream of per-shard item arrays into encoder batches that may span shards."""
    carry: deque[tuple[_Block, int, np.ndarray]] = deque()
    size = 0
    exhausted = False
    while True:
        while size < batch_size and not exhausted:
            nxt = next(blocks, None)
            if nxt is None:
                exhausted = True
            else:
                carry.append((nxt[0], 0, nxt[1]))
                size += len(nxt[1])
        if not carry:
            return
        parts, arrays, need = [], [], batch_size
        while carry and need:
            block, start, items = carry.popleft()
            take = min(need, len(items))
            parts.append((block, start, take))
            arrays.append(items[:take])
            if take < len(items):
                carry.appendleft((block, start + take, items[take:]))
            need -= take
            size -= take
        yield parts, arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _to_storage(level: torch.Tensor, np_dtype: np.dtype) -> np.ndarray:
    """Device tensor -> host array in the storage dtype (float16 clamps to its finite range; int8 levels
    were coded on the device by :class:`DeviceTransform`)."""
    if np_dtype == np.int8:
        assert level.dtype == torch.int8, "int8 storage needs the levels quantised on the device"
        return level.cpu().numpy()
    level = level.float()
    if np_dtype == np.float16:
        level = level.clamp(-FP16_MAX, FP16_MAX).to(torch.float16)
    return level.cpu().numpy()


def encode_batch(encoder: FrozenEncoder, batch: np.ndarray, dev: torch.device, dtype: str,
                 np_dtype: np.dtype, transform: DeviceTransform | None = None) -> list[np.ndarray]:
    """The one forward pass of extraction: (B, S, S, 3) uint8 -> four (B, C_k, h_k, w_k) host arrays in
    the storage dtype, in inference mode and autocast to ``dtype`` (a resolved compute dtype) off fp32.
    ``transform`` (``--pca`` / ``--quantize``) projects and codes each level on the device first, so
    C_k is the stored channel count."""
    x = torch.from_numpy(batch)
    if dev.type == "cuda":
        x = x.pin_memory().to(dev, non_blocking=True)
    compute = COMPUTE_DTYPES[dtype]
    with torch.inference_mode():
        with torch.autocast(dev.type, dtype=compute, enabled=compute != torch.float32):
            outs = encoder(x)
        if transform is not None:
            outs = [transform.apply(out, k) for k, out in enumerate(outs)]
        return [_to_storage(out, np_dtype) for out in outs]


def write_block(group: zarr.Group, index: slice, levels: list[np.ndarray]) -> None:
    """Write one shard's four (T, V, C, h, w) levels, then its ``done`` chunk: the commit marker.

    Levels are written with ``write_empty_chunks``: zarr otherwise compares every inner chunk with the
    fill value before encoding it, which costs a quarter of a compressed shard write (docs/benchmarks.md).
    """
    for k, level in enumerate(levels):
        group[f"level_{k}"].with_config({"write_empty_chunks": True})[index] = level
    group["done"][index] = True  # the commit marker, written after the data


def extract(store: Store, encoder: FrozenEncoder, *, batch_size: int = 16, device: str = "auto",
            dtype: str = "auto", views: int = 1, overwrite: bool = False, writers: int | None = None,
            codec: str | None = None, pca: int | None = None, quantize: str | None = None,
            show_progress: bool = True) -> ExtractReport:
    """Compute and write the four levels for every tile without a ``done`` marker.

    Runs in inference mode (autocast to ``dtype`` off fp32); resumes where a killed run stopped and
    never redoes committed shards. ``writers`` (default: one per CPU core, at most 8) compress and write
    finished shards in parallel: on a GPU the compression, not the encoder, is the bottleneck.
    ``codec`` (``NAME[:LEVEL][:SHUFFLE]`` or ``none``, see :func:`embedstore.store.codecs.parse_codec`;
    None: :func:`embedstore.store.codecs.default_codec`) compresses the level chunks; ``pca`` / ``quantize`` store compacted levels
    (:mod:`embedstore.extract.compact`), fitted once on train tiles before the first shard and reused on resume.
    """
    writers = writers or min(8, max(2, os.cpu_count() or 2))
    check_options(views=views, batch_size=batch_size, device=device, dtype=dtype, codec=codec, pca=pca,
                  quantize=quantize)
    if store.read_only:
        raise EmbedstoreError(f"{store.location}: store is opened read-only; extract into a local copy")
    if not store.ingest_complete:
        raise EmbedstoreError(f"{store.location}: dataset ingest is incomplete; run extract with --dataset again")
    dev = resolve_device(device)
    stored = storage_dtype(dtype)
    dtype = resolve_dtype(dtype, dev)
    encoder = encoder.to(dev)
    attrs = group_attrs(encoder, store.tile_size, views, dtype, stored, codec=codec, pca=pca, quantize=quantize)
    group, pending, report = open_pending(store, attrs, overwrite)
    key = report.key
    if not pending:
        return report
    transform = ensure_transform(store, group, encoder, dev=dev, dtype=dtype, batch_size=batch_size)
    on_device = None if transform.identity else DeviceTransform(transform, dev)
    shapes = [tuple(s) for s in attrs["level_shapes"]]
    np_dtype = np.dtype(attrs["storage_dtype"])
    start = time.perf_counter()

    def shard_stream(shards: Iterator[tuple[slice, np.ndarray]]) -> Iterator[tuple[_Block, np.ndarray]]:
        for block_slice, items in shards:
            n = block_slice.stop - block_slice.start
            levels = [np.empty((n, views, *s), dtype=np_dtype) for s in shapes]
            yield _Block(block_slice, views, levels), items

    in_flight: deque[Future] = deque()
    with progress_bar(f"extract {key}", total=store.n_samples, unit="tiles", enabled=show_progress,
                      done=report.tiles_skipped) as advance, \
            ThreadPoolExecutor(max_workers=max(1, writers)) as pool, \
            background(_shard_images(store, pending, views), depth=2) as shards:
        for parts, batch in _batches(shard_stream(shards), batch_size):
            t0 = time.perf_counter()
            arrays = encode_batch(encoder, batch, dev, dtype, np_dtype, on_device)
            report.encoder_seconds += time.perf_counter() - t0
            offset = 0
            for block, first, count in parts:
                for level, arr in zip(block.levels, arrays):
                    flat = level.reshape(block.n_items, *level.shape[2:])
                    flat[first:first + count] = arr[offset:offset + count]
                offset += count
                block.filled += count
                if block.filled == block.n_items:
                    in_flight.append(pool.submit(write_block, group, block.index, block.levels))
                    report.tiles_written += block.index.stop - block.index.start
                    advance(block.index.stop - block.index.start)
            while in_flight and (in_flight[0].done() or len(in_flight) > 2 * writers):
                in_flight.popleft().result()
        while in_flight:
            in_flight.popleft().result()
    report.seconds = time.perf_counter() - start
    if bool(np.asarray(group["done"][:]).all()):
        write_manifest(store.location, f"features/{key}")  # after the last marker: the group's hashes
    return report


def write_manifest_once(store: Store, key: str) -> None:
    """Write a complete group's manifest if a run that committed the last tile was killed before it."""
    if MANIFEST not in store.group[f"features/{key}"]:
        write_manifest(store.location, f"features/{key}")
