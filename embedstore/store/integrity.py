"""Checked reads: a corrupted, missing or non-finite tile is an error naming the array and the sample, never numbers.

Every array written with schema version 2 carries a crc32c checksum per inner chunk (one tile) and the
shard index its own, so zarr refuses a flipped byte when it decodes the chunk. Two things a checksum
cannot see are caught here as well:

- a chunk that is gone (a deleted or emptied shard): zarr reads the fill value. Feature arrays of
  schema 2 are filled with NaN, so a missing tile reads as non-finite; in schema 1 stores (fill 0) a
  committed tile whose features are all exactly zero is taken as missing (a real encoder never gives that).
- NaN or Inf values written by a broken extraction.
- int8 feature arrays (``--quantize int8``) are filled with -128, a value their clipped codes never take:
  a committed tile holding any -128 is missing.

Readers (the training loader, evaluation, verify) call :func:`read_tiles_checked` on the slices they read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import zarr

from embedstore.errors import EmbedstoreError

#: What zarr / numcodecs raise when a chunk does not decode (checksum mismatch, truncated or garbled bytes).
DECODE_ERRORS = (ValueError, RuntimeError, OSError, EOFError, TypeError, IndexError)


class CorruptTileError(EmbedstoreError):
    """A committed tile whose chunk is corrupted, missing or holds non-finite values."""


def _names(tiles: np.ndarray, sample_ids: Sequence[str] | None) -> str:
    """``tile 3 (id)`` or ``tiles 3 (id), 4 (id) ... and 11 more``."""
    shown = [f"{int(t)}" + (f" ({sample_ids[int(t)]})" if sample_ids is not None else "") for t in tiles[:5]]
    more = f" and {len(tiles) - 5} more" if len(tiles) > 5 else ""
    return ("tile " if len(tiles) == 1 else "tiles ") + ", ".join(shown) + more


def _array_name(array: zarr.Array) -> str:
    return str(array.path or array.name).strip("/")


def read_tiles_checked(array: zarr.Array, span: slice, *, sample_ids: Sequence[str] | None = None,
                       finite: bool = False, committed: np.ndarray | None = None) -> np.ndarray:
    """``array[span]`` as numpy, or a one-line :class:`CorruptTileError` naming the array and the tiles.

    Parameters
    ----------
    array : a tile-major zarr array (axis 0 = tile index).
    span : contiguous tile range to read (one read: shards decode once).
    sample_ids : ``samples/id`` of the store, to name the tiles in messages.
    finite : also refuse non-finite values (feature arrays) and missing chunks (NaN fill, see module doc).
    committed : (len(span),) bool, tiles whose done marker is set; only they are checked for ``finite``
        (default: all tiles of the span).
    """
    try:
        values = _read(array, span)
    except DECODE_ERRORS as err:
        bad = _undecodable_tiles(array, span)
        raise CorruptTileError(
            f"{_array_name(array)}: {_names(bad, sample_ids) if bad.size else f'tiles {span.start}-{span.stop - 1}'} "
            f"do{'es' if bad.size == 1 else ''} not decode ({_reason(err)}); the store is damaged: run `embed verify`") from None
    if finite:
        check_finite(values, array, span, sample_ids=sample_ids, committed=committed)
    return values


def read_rows(array: zarr.Array, index: np.ndarray, *, sample_ids: Sequence[str] | None = None,
              finite: bool = False) -> np.ndarray:
    """Rows ``index`` (sorted tile indices, typically of one block) of ``array``, read as one checked slice.

    Only the rows asked for are checked for ``finite``: tiles between them may be uncommitted.
    Returns (len(index), ...) values.
    """
    index = np.asarray(index, dtype=np.int64)
    span = slice(int(index[0]), int(index[-1]) + 1)
    rows = index - span.start
    committed = np.zeros(span.stop - span.start, bool)
    committed[rows] = True
    return read_tiles_checked(array, span, sample_ids=sample_ids, finite=finite, committed=committed)[rows]


def _read(array: zarr.Array, span: slice) -> np.ndarray:
    """Read ``array[span]``; a cached remote store gets one retry with the span's shards evicted, so a
    download that was damaged on its way is fetched again before the tile counts as corrupt."""
    try:
        return np.asarray(array[span])
    except DECODE_ERRORS:
        evict = getattr(array.store, "evict", None)
        if evict is None:
            raise
        per_shard = array.shards[0] if array.shards else array.chunks[0]
        rest = (0,) * (array.ndim - 1)
        for shard in range(span.start // per_shard, (span.stop - 1) // per_shard + 1):
            evict(f"{array.path}/{array.metadata.encode_chunk_key((shard, *rest))}")
        return np.asarray(array[span])


def check_finite(values: np.ndarray, array: zarr.Array, span: slice, *, sample_ids: Sequence[str] | None = None,
                 committed: np.ndarray | None = None) -> None:
    """Refuse committed tiles of ``values`` (read from ``array[span]``) that are missing or not finite."""
    flat = values.reshape(values.shape[0], -1)
    fill = array.fill_value
    if np.issubdtype(flat.dtype, np.integer):  # int8 codes: clipped to [-127, 127], so the fill -128 is never data
        missing = np.any(flat == fill, axis=1)
    else:
        finite = np.isfinite(flat).all(axis=1)
        missing = ~finite if fill is None or np.isnan(fill) else ~np.any(flat != fill, axis=1) | ~finite
    if committed is not None:
        missing &= committed
    if missing.any():
        tiles = np.flatnonzero(missing) + span.start
        raise CorruptTileError(
            f"{_array_name(array)}: {_names(tiles, sample_ids)}: committed, but the features are missing "
            "or not finite (NaN/Inf); the store is damaged: run `embed verify`")


def _undecodable_tiles(array: zarr.Array, span: slice) -> np.ndarray:
    """Tile indices of ``span`` whose own chunk fails to decode (read one by one to name them)."""
    bad = []
    for t in range(span.start, span.stop):
        try:
            array[t]
        except DECODE_ERRORS:
            bad.append(t)
    return np.asarray(bad, dtype=np.int64)


def _reason(err: BaseException) -> str:
    text = str(err).split("\n", 1)[0]
    if "checksum" in text.lower():
        return "checksum mismatch"
    return text[:120] or type(err).__name__
