"""Maps from a trained run: rebuild its decoders and turn cached features into probability maps.

A run folder (written by :func:`embedstore.trainer.fit.train.train`, laid out by
:class:`embedstore.trainer.run_folder.RunDir`) holds ``config.json`` and, per seed,
``seed_<k>/best.safetensors``; every checkpoint carries its decoder config, so :func:`load_run` needs
nothing else. :func:`predict_maps` decodes one batch with every seed's decoder (the features are read
once for all seeds, as in training); :func:`read_tiles` reads store tiles for it; :class:`MapBlender`
blends per-tile :class:`TileMaps` into a larger image with :class:`embedstore.imaging.tiling.TileBlender`
(``embed evaluate`` on stitched images).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedstore.errors import EmbedstoreError
from embedstore.imaging.tiling import TileBlender, Window
from embedstore.store import Store
from embedstore.store.features import load_transform, read_features
from embedstore.store.integrity import read_rows
from embedstore.trainer.run_folder import RunConfig, RunDir

if TYPE_CHECKING:  # torch is imported where it is used, so map-only users (workers, blending) skip it
    import torch

    from embedstore.trainer.model.decoder import CellDecoder


@dataclass(frozen=True)
class TileMaps:
    """A decoder's probability maps for one tile or image.

    Attributes
    ----------
    contour : (3, H, W) float32 softmax over boundary, body, background.
    directions : (4, H, W) float32 direction maps h, v, tl, bl (linear outputs, about [-1, 1]).
    types : (n_types + 1, H, W) float32 class softmax (channel 0 = background), None without classes.
    """

    contour: np.ndarray
    directions: np.ndarray
    types: np.ndarray | None

    def planes(self) -> np.ndarray:
        """All maps stacked as one (7 [+ n_types + 1], H, W) array: contour, directions, then types."""
        parts = [self.contour, self.directions] + ([] if self.types is None else [self.types])
        return np.concatenate(parts, axis=0)

    @classmethod
    def from_planes(cls, planes: np.ndarray) -> TileMaps:
        """Inverse of :meth:`planes`: channels 0-2 contour, 3-6 directions, the rest (if any) types."""
        return cls(contour=planes[:3], directions=planes[3:7], types=planes[7:] if len(planes) > 7 else None)


def map_channels(n_types: int) -> int:
    """Channels of :meth:`TileMaps.planes`: 3 contour + 4 directions (+ n_types + 1 type probabilities)."""
    return 7 + (n_types + 1 if n_types else 0)


def background_fill(n_types: int) -> np.ndarray:
    """(:func:`map_channels`,) float32 planes of a pixel with no cell: background probability 1, zero
    directions, background class."""
    fill = np.zeros(map_channels(n_types), np.float32)
    fill[2] = 1.0
    if n_types:
        fill[7] = 1.0
    return fill


@dataclass
class LoadedRun:
    """A run's folder, its configuration and one eval-mode decoder per seed, on ``device``."""

    run: RunDir
    run_config: RunConfig
    seeds: tuple[int, ...]
    models: list[CellDecoder]
    device: torch.device

    @property
    def encoder_key(self) -> str:
        return self.run_config.encoder_key

    @property
    def levels(self) -> tuple[int, ...]:
        """Levels the decoders read (all seeds share one decoder config)."""
        return tuple(self.models[0].cfg.levels)

    @property
    def n_types(self) -> int:
        return int(self.models[0].cfg.n_types)

    @property
    def tile_size(self) -> int:
        return int(self.models[0].cfg.tile_size)

    @property
    def store_location(self) -> str:
        return self.run_config.store


def load_run(run: str | Path, *, seeds: tuple[int, ...] | None = None, device: str = "cpu",
             which: str = "best") -> LoadedRun:
    """Rebuild every seed's decoder from its ``<which>.safetensors`` checkpoint.

    Parameters
    ----------
    run : run folder with ``config.json`` and ``seed_<k>/``.
    seeds : subset of the run's seeds (default: all seeds in config.json).
    device : "auto", "cpu" or "cuda[:N]".
    which : "best" (default) or "last".

    Raises
    ------
    EmbedstoreError : no run, a seed the run does not have, a missing or incompatible checkpoint.
    """
    from embedstore.device import resolve_device
    from embedstore.trainer.model.checkpoint import load_decoder

    folder = RunDir(run)
    config = folder.read_config()
    known = tuple(int(s) for s in config.seeds)
    chosen = known if seeds is None else tuple(int(s) for s in seeds)
    unknown = sorted(set(chosen) - set(known))
    if unknown or not chosen:
        raise EmbedstoreError(f"{run}: seeds {unknown or list(chosen)} are not among the run's seeds {list(known)}")
    dev = resolve_device(device)
    models = [load_decoder(folder.require_checkpoint(s, which)).to(dev) for s in chosen]
    cfgs = {json.dumps(m.cfg.to_dict(), sort_keys=True) for m in models}
    if len(cfgs) != 1:
        raise EmbedstoreError(f"{run}: the seeds' checkpoints hold different decoder configurations")
    return LoadedRun(run=folder, run_config=config, seeds=chosen, models=models, device=dev)


def read_tiles(store: Store, encoder_key: str, levels: tuple[int, ...], index: np.ndarray
               ) -> tuple[list[np.ndarray], np.ndarray]:
    """Cached view 0 of ``levels`` and the RGB tiles of sorted store indices, one checked slice read per array
    (a corrupted, missing or non-finite tile is a one-line error naming it, see :mod:`embedstore.store.integrity`).

    Returns
    -------
    levels : list of (n, C_k, h_k, w_k) decoded arrays (float16, or float32 for fp32 stores; empty for ``levels=()``).
    images : (n, S, S, 3) uint8.
    """
    index = np.asarray(index, dtype=np.int64)
    if index.size == 0:
        raise ValueError("read_tiles needs at least one tile index")
    if np.any(np.diff(index) <= 0):
        raise ValueError("read_tiles needs sorted, distinct tile indices")
    ids = store.sample_ids
    group = store.features(encoder_key) if levels else None  # the no-encoder baseline reads no feature array
    feats = []
    if group is not None:
        transform = load_transform(group)  # int8 / PCA stores decode to the float channels decoders trained on
        feats = [read_features(group, k, index, sample_ids=ids, transform=transform)[:, 0] for k in levels]
    images = read_rows(store.group["images"], index, sample_ids=ids)
    return feats, images


def predict_maps(models: list[CellDecoder], levels: list[np.ndarray] | list[torch.Tensor], images: np.ndarray,
                 device: torch.device | str = "cpu") -> list[list[TileMaps]]:
    """Probability maps of one batch for every model: the inputs are moved to ``device`` once.

    Parameters
    ----------
    models : eval-mode decoders sharing one config (e.g. ``LoadedRun.models``).
    levels : the levels the decoders read, each (B, C_k, h_k, w_k) (any float dtype).
    images : (B, S, S, 3) uint8 RGB tiles.
    device : where the models live.

    Returns
    -------
    ``maps[m][b]``: :class:`TileMaps` of model m on tile b (float32 numpy on the CPU).
    """
    import torch

    def softmax(logits: torch.Tensor) -> np.ndarray:
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    dev = torch.device(device)
    out: list[list[TileMaps]] = []
    with torch.no_grad():
        x = [torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v).to(dev).float() for v in levels]
        image = torch.from_numpy(np.ascontiguousarray(images)).to(dev).permute(0, 3, 1, 2).float().div_(255.0)
        for model in models:
            pred = model(x, image)
            contour = softmax(pred["contour"])
            directions = pred["directions"].float().cpu().numpy()
            types = softmax(pred["types"]) if "types" in pred else None
            out.append([TileMaps(contour[b], directions[b], None if types is None else types[b])
                        for b in range(contour.shape[0])])
    return out


class MapBlender:
    """Blend per-tile :class:`TileMaps` into an (H, W) image with :class:`~embedstore.imaging.tiling.TileBlender`.

    ``window="uniform"`` is the plain mean over the tiles covering a pixel; ``"spline"`` is the
    squared-spline window that predict and stitched evaluation use. Tiles may stick out of the image (zero-padded border
    tiles); the outside part is dropped. Pixels that no tile covers get :func:`background_fill`:
    background probability 1, zero directions and background class.

    Parameters
    ----------
    shape : (H, W) of the image.
    n_types : class channels without background (0: no type maps).
    window : see :data:`embedstore.imaging.tiling.Window`.
    """

    def __init__(self, shape: tuple[int, int], n_types: int, window: Window = "uniform") -> None:
        self.n_types = int(n_types)
        self.blender = TileBlender(shape, map_channels(self.n_types), window, fill=background_fill(self.n_types))

    @property
    def shape(self) -> tuple[int, int]:
        return self.blender.shape

    def add(self, maps: TileMaps, origin: tuple[int, int]) -> None:
        """Accumulate one tile's maps whose top-left pixel sits at ``origin`` = (y, x)."""
        if self.n_types and maps.types is None:
            raise ValueError("MapBlender was built with type maps but the tile has none")
        planes = maps.planes() if self.n_types else np.concatenate([maps.contour, maps.directions])
        self.blender.add(planes, origin)

    def result(self) -> TileMaps:
        """The blended maps, (C, H, W) float32 each."""
        return TileMaps.from_planes(self.blender.result())
