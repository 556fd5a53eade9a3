"""Shared inference helpers: rebuild a run's decoders and turn cached features into probability maps.

A run folder (written by :func:`embedstore.trainer.fit.train.train`) holds ``config.json`` and, per seed,
``seed_<k>/best.safetensors``; every checkpoint carries its decoder config, so :func:`load_run` needs
nothing else. :func:`predict_maps` decodes one batch with every seed's decoder (the features are read
once for all seeds, as in training); :func:`read_tiles` reads store tiles for it; :class:`MapBlender`
averages per-tile maps into a larger image at the tiles' origins (``embed evaluate`` on stitched images,
``embed predict`` on whole images).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedstore.errors import EmbedstoreError
from embedstore.store import Store

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


@dataclass
class LoadedRun:
    """A run's configuration and one eval-mode decoder per seed, on ``device``."""

    run: Path
    config: dict[str, Any]
    seeds: tuple[int, ...]
    models: list[CellDecoder]
    device: torch.device

    @property
    def encoder_key(self) -> str:
        return str(self.config["encoder_key"])

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
        return str(self.config["store"])


def read_config(run: str | Path) -> dict[str, Any]:
    """The run's ``config.json``.

    Raises
    ------
    EmbedstoreError : no such run folder, or no readable config.json in it.
    """
    path = Path(run)
    if not path.is_dir():
        raise EmbedstoreError(f"{path}: no such run folder")
    cfg_path = path / "config.json"
    try:
        return dict(json.loads(cfg_path.read_text()))
    except FileNotFoundError:
        raise EmbedstoreError(f"{path}: not a run folder (no config.json); train one with `embed train`") from None
    except (OSError, json.JSONDecodeError) as err:
        raise EmbedstoreError(f"{cfg_path}: unreadable run config ({err})") from None


def checkpoint_path(run: str | Path, seed: int, which: str = "best") -> Path:
    """``<run>/seed_<seed>/<which>.safetensors``, refusing a missing file."""
    path = Path(run) / f"seed_{seed}" / f"{which}.safetensors"
    if not path.is_file():
        raise EmbedstoreError(f"{path}: missing checkpoint of seed {seed}; was the run trained to the end?")
    return path


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

    config = read_config(run)
    known = tuple(int(s) for s in config.get("seeds", ()))
    chosen = known if seeds is None else tuple(int(s) for s in seeds)
    unknown = sorted(set(chosen) - set(known))
    if unknown or not chosen:
        raise EmbedstoreError(f"{run}: seeds {unknown or list(chosen)} are not among the run's seeds {list(known)}")
    dev = resolve_device(device)
    models = [load_decoder(checkpoint_path(run, s, which)).to(dev) for s in chosen]
    cfgs = {json.dumps(m.cfg.to_dict(), sort_keys=True) for m in models}
    if len(cfgs) != 1:
        raise EmbedstoreError(f"{run}: the seeds' checkpoints hold different decoder configurations")
    return LoadedRun(run=Path(run), config=config, seeds=chosen, models=models, device=dev)


def read_tiles(store: Store, encoder_key: str, levels: tuple[int, ...], index: np.ndarray
               ) -> tuple[list[np.ndarray], np.ndarray]:
    """Cached view 0 of ``levels`` and the RGB tiles of sorted store indices, one slice read per array.

    Returns
    -------
    levels : list of (n, C_k, h_k, w_k) arrays in the storage dtype.
    images : (n, S, S, 3) uint8.
    """
    index = np.asarray(index, dtype=np.int64)
    if index.size == 0:
        raise ValueError("read_tiles needs at least one tile index")
    if np.any(np.diff(index) <= 0):
        raise ValueError("read_tiles needs sorted, distinct tile indices")
    group = store.features(encoder_key)
    span = slice(int(index[0]), int(index[-1]) + 1)
    rows = index - span.start
    feats = [np.asarray(group[f"level_{k}"][span])[rows, 0] for k in levels]
    images = np.asarray(store.group["images"][span])[rows]
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
    """Average tile maps into an (H, W) image where tiles overlap (plain mean, as CISCA's tests do).

    Tiles may stick out of the image (zero-padded border tiles); the outside part is dropped. Pixels that
    no tile covers get background probability 1, zero directions and background class.

    Parameters
    ----------
    shape : (H, W) of the image.
    n_types : class channels without background (0: no type maps).
    """

    def __init__(self, shape: tuple[int, int], n_types: int) -> None:
        h, w = int(shape[0]), int(shape[1])
        self.shape = (h, w)
        self.contour = np.zeros((3, h, w), np.float32)
        self.directions = np.zeros((4, h, w), np.float32)
        self.types = np.zeros((n_types + 1, h, w), np.float32) if n_types > 0 else None
        self.weight = np.zeros((h, w), np.float32)

    def add(self, maps: TileMaps, origin: tuple[int, int]) -> None:
        """Accumulate one tile's maps whose top-left pixel sits at ``origin`` = (y, x)."""
        y, x = int(origin[0]), int(origin[1])
        h = min(maps.contour.shape[1], self.shape[0] - y)
        w = min(maps.contour.shape[2], self.shape[1] - x)
        if h <= 0 or w <= 0 or y < 0 or x < 0:
            raise ValueError(f"tile at origin {origin} lies outside the {self.shape} image")
        region = (slice(None), slice(y, y + h), slice(x, x + w))
        self.contour[region] += maps.contour[:, :h, :w]
        self.directions[region] += maps.directions[:, :h, :w]
        if self.types is not None:
            if maps.types is None:
                raise ValueError("MapBlender was built with type maps but the tile has none")
            self.types[region] += maps.types[:, :h, :w]
        self.weight[y:y + h, x:x + w] += 1.0

    def result(self) -> TileMaps:
        """The averaged maps, (C, H, W) float32 each."""
        covered = self.weight > 0
        inv = np.where(covered, 1.0 / np.maximum(self.weight, 1.0), 0.0).astype(np.float32)
        contour = self.contour * inv
        contour[2][~covered] = 1.0
        types = None
        if self.types is not None:
            types = self.types * inv
            types[0][~covered] = 1.0
        return TileMaps(contour, self.directions * inv, types)
