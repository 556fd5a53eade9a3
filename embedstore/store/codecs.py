"""The ``--codec`` vocabulary: ``NAME[:LEVEL][:SHUFFLE]`` -> the bytes-to-bytes codecs of a feature array's chunks.

One spelling for `embed extract --codec` and `embed bench io`: a Blosc compressor (or ``none``) followed by
the crc32c checksum that every schema-2 chunk carries. The record written to a feature group's ``codec``
attribute (:func:`codec_record`) can be turned back into codecs (:func:`codecs_of_record`), so a resumed
run writes its remaining shards exactly as the first one did.
"""

from __future__ import annotations

from typing import Any

from zarr.abc.codec import BytesBytesCodec
from zarr.codecs import BloscCodec, Crc32cCodec

from embedstore.errors import EmbedstoreError

#: Blosc compressors ``--codec`` accepts.
BLOSC_NAMES = ("zstd", "lz4", "lz4hc", "blosclz", "zlib")
#: Blosc shuffle filters ``--codec`` accepts (bitshuffle also helps int8 codes; byte shuffle does not).
SHUFFLES = ("shuffle", "bitshuffle", "noshuffle")
DEFAULT_LEVEL = 3
DEFAULT_SHUFFLE = "bitshuffle"
#: The store's default, the same as :data:`embedstore.store.zarr_store.COMPRESSOR`.
DEFAULT_CODEC = f"zstd:{DEFAULT_LEVEL}:{DEFAULT_SHUFFLE}"
INT8_CODEC = f"zstd:5:{DEFAULT_SHUFFLE}"
"""The default of int8 groups: half the bytes of float16 to compress, so level 5 costs less time per tile
than level 3 on float16 (5.5 against 7.2 ms per ViT-B tile) and saves 3.6% (docs/benchmarks.md)."""
NO_COMPRESSION = "none"


def _blosc(cname: str, clevel: int, shuffle: str) -> BloscCodec:
    """A fresh Blosc codec (its typesize still tunable: zarr sets it from the array's dtype)."""
    return BloscCodec(cname=cname, clevel=clevel, shuffle=shuffle)


def default_codec(quantize: str | None) -> str:
    """The codec of a feature group whose ``--codec`` is not given: :data:`INT8_CODEC` for int8 codes."""
    return INT8_CODEC if quantize == "int8" else DEFAULT_CODEC


def parse_codec(text: str) -> tuple[BytesBytesCodec, ...]:
    """``"zstd:3:bitshuffle"``, ``"lz4:5:shuffle"``, ``"zstd:1"``, ``"lz4"``, ``"none"`` -> chunk codecs.

    LEVEL (0-9) defaults to 3 and SHUFFLE to bitshuffle. Returns (Blosc, crc32c), or (crc32c,) for ``none``:
    the checksum is always kept. Anything else is a one-line :class:`EmbedstoreError`.
    """
    spec = text.strip().lower()
    if spec == NO_COMPRESSION:
        return (Crc32cCodec(),)
    name, *rest = spec.split(":")
    level, shuffle = DEFAULT_LEVEL, DEFAULT_SHUFFLE
    seen_level = seen_shuffle = False
    ok = name in BLOSC_NAMES and len(rest) <= 2
    for part in rest if ok else ():
        if part.isdigit() and not seen_level and not seen_shuffle and 0 <= int(part) <= 9:
            level, seen_level = int(part), True
        elif part in SHUFFLES and not seen_shuffle:
            shuffle, seen_shuffle = part, True
        else:
            ok = False
    if not ok:
        raise EmbedstoreError(
            f"--codec {text!r}: expected NAME[:LEVEL][:SHUFFLE] with NAME one of {', '.join(BLOSC_NAMES)}, "
            f"LEVEL 0-9 and SHUFFLE one of {', '.join(SHUFFLES)} (e.g. {DEFAULT_CODEC}, lz4:5:shuffle), or none")
    return (_blosc(name, level, shuffle), Crc32cCodec())


def codec_record(codecs: tuple[BytesBytesCodec, ...]) -> dict[str, Any]:
    """The ``codec`` attribute of a feature group: the compressor's zarr dict (None without one), the checksum
    and the chunking."""
    compressor = next((c for c in codecs if isinstance(c, BloscCodec)), None)
    return {"compressor": None if compressor is None else compressor.to_dict(), "checksum": "crc32c",
            "inner_chunk": "one tile"}


def codecs_of_record(record: dict[str, Any] | None) -> tuple[BytesBytesCodec, ...]:
    """Chunk codecs of a ``codec`` attribute (:func:`codec_record`); None (a group without one) is the default."""
    if record is None:
        return parse_codec(DEFAULT_CODEC)
    compressor = record.get("compressor")
    if compressor is None:
        return (Crc32cCodec(),)
    conf = compressor["configuration"]
    return (_blosc(str(conf["cname"]), int(conf["clevel"]), str(conf["shuffle"])), Crc32cCodec())


def codec_name(record: dict[str, Any] | None) -> str:
    """``NAME:LEVEL:SHUFFLE`` (or ``none``) of a ``codec`` attribute, as ``--codec`` spells it."""
    if record is None:
        return DEFAULT_CODEC
    compressor = record.get("compressor")
    if compressor is None:
        return NO_COMPRESSION
    conf = compressor["configuration"]
    return f"{conf['cname']}:{conf['clevel']}:{conf['shuffle']}"
