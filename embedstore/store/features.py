"""Feature decoding: the one place that turns stored level arrays into what a decoder reads (numpy only).

A feature group may hold its levels compacted (`embed extract --pca K`, ``--quantize int8``):

- PCA: each level was projected on the device onto K principal components fitted on train tiles,
  ``y = (x - mean) @ components``; decoders train on, and read, the K projected channels (the projection
  is never inverted).
- int8: each stored channel ``y`` was coded as ``round((y - offset) / scale)`` clipped to [-127, 127];
  :func:`read_features` decodes ``codes * scale + offset`` to float16 (float32 when the group was
  extracted with ``--dtype fp32``), so no decoder ever sees int8 codes. -128 is the fill value: a missing
  chunk reads as -128 and checked reads refuse it (:func:`embedstore.store.integrity.check_finite`).

The parameters live in the group as small checksummed arrays ``transform/level_<k>/{mean, components,
scale, offset}`` (float32), written before any level chunk, and the group's ``transform`` attribute
``{"pca": K | None, "quantize": "int8" | None, "dtype": decoded dtype, "fitted_on": {...}}``; its
``fitted_on`` is set last, so a transform without it was never completely written. Groups without a
``transform`` attribute (every store written before it existed) decode as stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from embedstore.errors import EmbedstoreError
from embedstore.store.integrity import read_rows

#: ``--quantize`` values (``none``: the storage dtype as ``--dtype`` says).
QUANTIZE = ("none", "int8")
#: Fill value of int8 level arrays: codes are clipped to [-127, 127], so -128 only ever means "no chunk".
INT8_FILL = -128
INT8_MAX = 127
TRANSFORM = "transform"
PARAMETERS = ("mean", "components", "scale", "offset")


@dataclass(frozen=True, eq=False)
class LevelTransform:
    """One level's parameters, float32; None where that step is off.

    mean : (C,) sample mean of the encoder channels (PCA).
    components : (C, K) principal directions, one column per stored channel, in decreasing variance (PCA).
    scale, offset : (K,) int8 step and centre of each stored channel.
    """

    mean: np.ndarray | None = None
    components: np.ndarray | None = None
    scale: np.ndarray | None = None
    offset: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class FeatureTransform:
    """How a feature group's stored levels map to decoder inputs (identity for plain stores).

    ``levels`` holds one :class:`LevelTransform` per level (empty for identity); ``dtype`` is what
    :meth:`decode` returns (float16 or float32).
    """

    pca: int | None = None
    quantize: str | None = None
    dtype: str = "float16"
    levels: tuple[LevelTransform, ...] = field(default_factory=tuple)

    @property
    def identity(self) -> bool:
        return self.pca is None and self.quantize is None

    def decode(self, stored: np.ndarray, k: int) -> np.ndarray:
        """(T, V, K, h, w) stored values of level ``k`` -> decoder input in :attr:`dtype` (int8 dequantised)."""
        if self.quantize is None:
            return stored
        p = self.levels[k]
        assert p.scale is not None and p.offset is not None
        shape = (1,) * (stored.ndim - 3) + (-1, 1, 1)  # the channel axis is third from the end
        out = stored.astype(np.float32) * p.scale.reshape(shape) + p.offset.reshape(shape)
        return out.astype(self.dtype, copy=False)

    def to_attr(self, fitted_on: dict[str, Any] | None) -> dict[str, Any]:
        """The group's ``transform`` attribute (``fitted_on`` None: parameters not yet written)."""
        return {"pca": self.pca, "quantize": self.quantize, "dtype": self.dtype, "fitted_on": fitted_on}


def transform_request(attr: dict[str, Any] | None) -> dict[str, Any]:
    """What identifies a transform across runs ({pca, quantize, decoded dtype}; not when or on what it was
    fitted): a resumed run must ask for the same one. None (plain levels) is all None."""
    if not attr or (attr.get("pca") is None and attr.get("quantize") is None):
        return {"pca": None, "quantize": None, "dtype": None}
    return {"pca": attr.get("pca"), "quantize": attr.get("quantize"), "dtype": attr.get("dtype")}


def transform_committed(group: zarr.Group) -> bool:
    """True when the group needs no transform or its parameters were completely written."""
    attr = group.attrs.get(TRANSFORM)
    if not attr or (attr.get("pca") is None and attr.get("quantize") is None):
        return True
    return attr.get("fitted_on") is not None


def write_transform(group: zarr.Group, transform: FeatureTransform, fitted_on: dict[str, Any]) -> None:
    """Write the parameter arrays (crc32c-checked), then the ``transform`` attribute with ``fitted_on``: last,
    so a kill in between leaves a transform that resume refits instead of one that is half there."""
    for k, level in enumerate(transform.levels):
        for name in PARAMETERS:
            value = getattr(level, name)
            if value is None:
                continue
            value = np.asarray(value, dtype=np.float32)
            array = group.create_array(f"{TRANSFORM}/level_{k}/{name}", shape=value.shape, dtype="float32",
                                       chunks=value.shape, compressors=(Crc32cCodec(),), overwrite=True)
            array[...] = value
    group.attrs[TRANSFORM] = transform.to_attr(fitted_on)


def load_transform(group: zarr.Group) -> FeatureTransform:
    """The group's :class:`FeatureTransform`; identity (decode as stored) for groups without one."""
    attr = group.attrs.get(TRANSFORM)
    stored = str(group.attrs.get("storage_dtype", "float16"))
    if not attr or (attr.get("pca") is None and attr.get("quantize") is None):
        return FeatureTransform(dtype=stored)
    if attr.get("fitted_on") is None:
        raise EmbedstoreError(f"{group.path}: the transform parameters were never completely written; "
                              "run `embed extract` again to finish them")
    levels = []
    for k in range(len(group.attrs["level_shapes"])):
        prefix = f"{TRANSFORM}/level_{k}"
        values = {name: np.asarray(group[f"{prefix}/{name}"][...]) if f"{prefix}/{name}" in group else None
                  for name in PARAMETERS}
        levels.append(LevelTransform(**values))
    return FeatureTransform(pca=attr.get("pca"), quantize=attr.get("quantize"), dtype=str(attr["dtype"]),
                            levels=tuple(levels))


def read_features(group: zarr.Group, k: int, index: np.ndarray, *, sample_ids: Sequence[str] | None = None,
                  transform: FeatureTransform | None = None) -> np.ndarray:
    """Checked rows ``index`` (sorted tile indices of one block) of level ``k``, decoded for a decoder.

    Returns (len(index), V, C_k, h_k, w_k) in ``transform.dtype``; C_k is the stored channel count (K with
    PCA). A damaged, missing or non-finite tile is a one-line :class:`CorruptTileError`. ``transform``
    (default: loaded from the group) lets a caller that reads many blocks load it once.
    """
    transform = load_transform(group) if transform is None else transform
    codes = read_rows(group[f"level_{k}"], index, sample_ids=sample_ids, finite=True)
    return transform.decode(codes, k)


def transform_summary(attr: dict[str, Any] | None) -> str:
    """One phrase for `embed info`: ``"pca 8, int8 (fitted on 12 train tiles)"``, or ``"none"``."""
    if not attr or (attr.get("pca") is None and attr.get("quantize") is None):
        return "none"
    steps = ([f"pca {attr['pca']}"] if attr.get("pca") is not None else []) + \
        ([str(attr["quantize"])] if attr.get("quantize") is not None else [])
    fitted = attr.get("fitted_on")
    where = (f"fitted on {fitted.get('tiles')} {fitted.get('split')} tiles" if fitted else "not fitted yet")
    return f"{', '.join(steps)} ({where})"
