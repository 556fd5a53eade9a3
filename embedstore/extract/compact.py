"""Smaller feature groups: fitting and applying `embed extract --pca K` and ``--quantize int8`` (torch side).

The transform is fitted once per feature group on a calibration sample of TRAIN tiles (the store's
``samples/split``; evenly spaced, at most :data:`CALIBRATION_TILES`, view 0), written into the group
before any level chunk (:func:`embedstore.store.features.write_transform`) and applied to every batch on
the device, before the host copy (:class:`DeviceTransform`). A resumed run, and every worker of a
distributed run, loads the stored parameters and never refits, so all shards share one transform. Decoding
on read belongs to :mod:`embedstore.store.features`.
"""

from __future__ import annotations

import numpy as np
import torch
import zarr

from embedstore.encoders import FrozenEncoder
from embedstore.errors import EmbedstoreError
from embedstore.store import Store
from embedstore.store.features import (
    INT8_MAX,
    QUANTIZE,
    FeatureTransform,
    LevelTransform,
    load_transform,
    transform_committed,
    write_transform,
)

#: Most train tiles the transform is fitted on: enough tokens per level (tiles x h x w) for a covariance of
#: ~1000 channels, few enough that fitting costs seconds next to the extraction.
CALIBRATION_TILES = 64
#: Smallest int8 step, for channels that are constant on the calibration sample.
MIN_SCALE = 1e-8


def check_compact_options(pca: int | None, quantize: str | None) -> None:
    """Refuse a bad ``--pca`` / ``--quantize`` before any work starts."""
    if pca is not None and pca < 1:
        raise EmbedstoreError(f"--pca {pca}: must be >= 1 (channels kept per level)")
    if quantize is not None and quantize not in QUANTIZE:
        raise EmbedstoreError(f"--quantize {quantize}: expected one of {', '.join(QUANTIZE)}")


def stored_shapes(shapes: list[tuple[int, int, int]], pca: int | None) -> list[tuple[int, int, int]]:
    """(C, h, w) per level as stored: C becomes min(K, C) under ``--pca K``."""
    return [(c if pca is None else min(pca, c), h, w) for c, h, w in shapes]


def calibration_tiles(store: Store) -> np.ndarray:
    """Store indices of the calibration sample: up to :data:`CALIBRATION_TILES` train tiles, evenly spaced
    (all of them when fewer), sorted. The split is the store's ``samples/split``."""
    train = store.samples().indices("train")
    if train.size == 0:
        raise EmbedstoreError(f"{store.location}: --pca / --quantize are fitted on 'train' tiles and the store "
                              "has none (samples/split)")
    if train.size <= CALIBRATION_TILES:
        return train
    return train[np.unique(np.linspace(0, train.size - 1, CALIBRATION_TILES).round().astype(np.int64))]


def _tokens(level: np.ndarray) -> np.ndarray:
    """(n, C, h, w) -> (n*h*w, C): one row per token."""
    return np.ascontiguousarray(level.transpose(0, 2, 3, 1).reshape(-1, level.shape[1]))


def _pca(tokens: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (C,), components (C, k)) of float64 tokens (M, C): eigenvectors of the covariance by decreasing
    eigenvalue, each signed so that its largest-magnitude entry is positive (the same sample gives the same
    components on every run)."""
    mean = tokens.mean(dim=0)
    centred = tokens - mean
    cov = centred.T @ centred / max(1, tokens.shape[0] - 1)
    _, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues
    components = vectors.flip(dims=(1,))[:, :k]
    peak = components.abs().argmax(dim=0)
    sign = torch.sign(components[peak, torch.arange(k, device=components.device)])
    return mean, components * torch.where(sign == 0, torch.ones_like(sign), sign)


def fit_transform(encoder: FrozenEncoder, images: np.ndarray, *, pca: int | None, quantize: str | None,
                  dev: torch.device, dtype: str, batch_size: int) -> FeatureTransform:
    """Fit the per-level transform on calibration tiles.

    Parameters
    ----------
    encoder : the frozen encoder of the run, on ``dev``.
    images : (n, S, S, 3) uint8 calibration tiles (view 0), see :func:`calibration_tiles`.
    pca : channels kept per level (min(K, C)); None: no projection.
    quantize : "int8" or None.
    dtype : the resolved compute dtype of the run (the encoder runs as in the extraction, stored fp32).

    Returns a :class:`FeatureTransform` whose decoded dtype still has to be set by the caller.
    PCA: mean and components from the float64 covariance of all the sample's tokens (n*h*w of them);
    int8: per stored channel, offset = (max + min) / 2 and scale = (max - min) / 254 of the (projected)
    sample tokens, so the sample itself codes without clipping.
    """
    from embedstore.extract.run import encode_batch  # run imports this module to apply the transform

    quantize = None if quantize == "none" else quantize
    outs: list[list[np.ndarray]] = []
    for first in range(0, len(images), batch_size):
        outs.append(encode_batch(encoder, images[first:first + batch_size], dev, dtype, np.dtype(np.float32)))
    levels = []
    for k in range(len(outs[0])):
        tokens = torch.from_numpy(_tokens(np.concatenate([o[k] for o in outs]))).to(dev, torch.float64)
        mean = components = scale = offset = None
        if pca is not None:
            mean, components = _pca(tokens, min(pca, tokens.shape[1]))
            tokens = (tokens - mean) @ components
        if quantize == "int8":
            high, low = tokens.max(dim=0).values, tokens.min(dim=0).values
            offset = (high + low) / 2
            scale = ((high - low) / (2 * INT8_MAX)).clamp_min(MIN_SCALE)
        levels.append(LevelTransform(*(None if t is None else t.float().cpu().numpy()
                                       for t in (mean, components, scale, offset))))
    return FeatureTransform(pca=pca, quantize=quantize, levels=tuple(levels))


class DeviceTransform:
    """A :class:`FeatureTransform`'s parameters on the encoder's device, applied to each batch before the
    host copy: projection in float32, then int8 coding (round to nearest, clip to [-127, 127])."""

    def __init__(self, transform: FeatureTransform, dev: torch.device) -> None:
        self.transform = transform

        def put(a: np.ndarray | None) -> torch.Tensor | None:
            return None if a is None else torch.from_numpy(np.asarray(a, np.float32)).to(dev)

        self._levels = [tuple(put(getattr(p, n)) for n in ("mean", "components", "scale", "offset"))
                        for p in transform.levels]

    def apply(self, level: torch.Tensor, k: int) -> torch.Tensor:
        """(B, C, h, w) encoder level ``k`` -> (B, K, h, w): float32 projected channels, or int8 codes."""
        if self.transform.identity:
            return level
        mean, components, scale, offset = self._levels[k]
        x = level.float()
        if components is not None and mean is not None:
            x = torch.einsum("bchw,ck->bkhw", x - mean.view(1, -1, 1, 1), components)
        if scale is not None and offset is not None:
            codes = torch.round((x - offset.view(1, -1, 1, 1)) / scale.view(1, -1, 1, 1))
            return codes.clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
        return x


def decoder_inputs(transform: DeviceTransform, level: torch.Tensor, k: int) -> torch.Tensor:
    """(B, C, h, w) encoder level -> (B, K, h, w) float32, what a decoder reads from the store: projected,
    and int8 coded then decoded as :meth:`FeatureTransform.decode` does. `embed predict` runs this on new
    images so that a decoder trained on a PCA or int8 group sees the same inputs."""
    coded = transform.apply(level, k)
    if coded.dtype != torch.int8:
        return coded.float()
    _, _, scale, offset = transform._levels[k]
    assert scale is not None and offset is not None
    return coded.float() * scale.view(1, -1, 1, 1) + offset.view(1, -1, 1, 1)


def ensure_transform(store: Store, group: zarr.Group, encoder: FrozenEncoder, *, dev: torch.device, dtype: str,
                     batch_size: int) -> FeatureTransform:
    """The group's transform: loaded when already written (resume, distributed workers), otherwise fitted on
    the calibration tiles and written into the group (before any level chunk). Identity: nothing to do."""
    if transform_committed(group):
        return load_transform(group)
    attr = dict(group.attrs["transform"])
    tiles = calibration_tiles(store)
    images = np.ascontiguousarray(store.group["images"].oindex[tiles])  # only the sample's chunks are read
    fitted = fit_transform(encoder, images, pca=attr.get("pca"), quantize=attr.get("quantize"), dev=dev,
                           dtype=dtype, batch_size=batch_size)
    fitted = FeatureTransform(pca=fitted.pca, quantize=fitted.quantize, dtype=str(attr["dtype"]),
                              levels=fitted.levels)
    shapes = [list(s) for s in group.attrs["level_shapes"]]
    tokens = [int(tiles.size) * h * w for _, h, w in shapes]
    write_transform(group, fitted, {"split": "train", "tiles": int(tiles.size), "tokens": tokens})
    return load_transform(group)
