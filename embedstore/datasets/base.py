"""The types every adapter returns: dataset metadata, one labelled tile, and a tiled view of source images.

An adapter lists its source images as :class:`Source` records (id, size, split, group and a picklable
loader) without decoding pixels; :class:`TiledDataset` turns them into a random-access sequence of
fixed-size :class:`Tile` s, so ``len`` is known before any image is read.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable, Protocol

import numpy as np

from embedstore.imaging.tiling import crop, grid_origins, relabel
from embedstore.errors import EmbedstoreError

#: What a source loader returns: image (H, W, 3) uint8, instance ids (H, W) integer, classes (H, W) or None.
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray | None]


@dataclass(frozen=True)
class DatasetInfo:
    """Dataset-level facts stored with every store built from it (see design.md, store attrs)."""

    name: str
    magnification: str
    um_per_px: float
    classes: tuple[str, ...]
    source: str

    def to_dict(self) -> dict:
        """JSON-able form: the tuple of class names becomes a list."""
        out = asdict(self)
        out["classes"] = list(self.classes)
        return out


@dataclass(frozen=True)
class Tile:
    """One fixed-size labelled tile and where it came from.

    ``image`` (S, S, 3) uint8 RGB; ``instance`` (S, S) int32 with ids 1..n (0 = background), relabelled
    per tile; ``cls`` (S, S) uint8 class ids 1..K (0 = background) or None for datasets without classes.
    ``origin`` is the tile's top-left (y, x) in the source image of size ``source_shape`` (H, W), so
    tiles sharing ``source`` can be stitched back.
    """

    image: np.ndarray
    instance: np.ndarray
    cls: np.ndarray | None
    sample_id: str
    split: str
    group: str
    source: str
    origin: tuple[int, int]
    source_shape: tuple[int, int]


class TileDataset(Protocol):
    """What :func:`embedstore.datasets.get_dataset` returns."""

    info: DatasetInfo

    def __len__(self) -> int: ...

    def tile(self, i: int) -> Tile: ...


@dataclass(frozen=True)
class Source:
    """One source image before tiling; ``load`` must be picklable (a module-level function or partial).

    ``files`` names where the pixels and labels come from, for error messages.
    """

    id: str
    shape: tuple[int, int]
    split: str
    group: str
    load: Callable[[], Arrays]
    files: str


class TiledDataset:
    """Random access to the fixed-size tiles of a list of sources.

    Tiles are ordered source by source, row-major within a source. The decoded arrays of the last two
    sources are cached, so consecutive tiles of one big image decode it once.
    """

    def __init__(self, info: DatasetInfo, sources: list[Source], tile_size: int = 256, stride: int | None = None):
        stride = tile_size if stride is None else stride
        if not isinstance(tile_size, int) or tile_size < 1:
            raise EmbedstoreError(f"option tile_size must be a positive integer, got {tile_size!r}")
        if not isinstance(stride, int) or not 1 <= stride <= tile_size:
            raise EmbedstoreError(
                f"option stride must be an integer in 1..tile_size ({tile_size}) so tiles cover the image, "
                f"got {stride!r}"
            )
        duplicates = sorted(k for k, n in Counter(s.id for s in sources).items() if n > 1)
        if duplicates:
            raise EmbedstoreError(f"{info.name}: sample ids listed more than once, e.g. {duplicates[:3]}")
        self.info = info
        self.sources = sources
        self.tile_size = tile_size
        self.stride = stride
        self._origins = [grid_origins(s.shape, tile_size, stride) for s in sources]
        self._ends = np.cumsum([len(o) for o in self._origins], dtype=np.int64)
        self._load = functools.lru_cache(maxsize=2)(self._load_source)

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_load"]  # caches hold decoded pixels and do not pickle
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._load = functools.lru_cache(maxsize=2)(self._load_source)

    def _load_source(self, k: int) -> Arrays:
        source = self.sources[k]
        image, instance, cls = source.load()
        if image.shape[:2] != instance.shape or (cls is not None and cls.shape != instance.shape):
            raise EmbedstoreError(
                f"{self.info.name} sample {source.id} ({source.files}): image size {image.shape[:2]} "
                f"does not match label size {instance.shape}"
                + ("" if cls is None else f" / class map size {cls.shape}")
            )
        if image.shape[:2] != source.shape:
            raise ValueError(f"{source.id}: loader returned size {image.shape[:2]}, listed {source.shape}")
        if cls is not None and self.info.classes and int(cls.max(initial=0)) > len(self.info.classes):
            raise EmbedstoreError(
                f"{self.info.name} sample {source.id} ({source.files}): class id {int(cls.max())} exceeds the "
                f"{len(self.info.classes)} classes {self.info.classes}"
            )
        return image, instance, cls

    def tile(self, i: int) -> Tile:
        """Tile ``i`` (0 <= i < len): crop of its source at its origin, zero-padded, instances relabelled."""
        if not 0 <= i < len(self):
            raise IndexError(f"tile index {i} out of range for {len(self)} tiles")
        k = int(np.searchsorted(self._ends, i, side="right"))
        origin = self._origins[k][i - (int(self._ends[k - 1]) if k else 0)]
        source = self.sources[k]
        image, instance, cls = self._load(k)
        single = len(self._origins[k]) == 1 and origin == (0, 0)
        return Tile(
            image=crop(image, origin, self.tile_size),
            instance=relabel(crop(instance, origin, self.tile_size)),
            cls=None if cls is None or not self.info.classes else crop(cls, origin, self.tile_size).astype(np.uint8),
            sample_id=source.id if single else f"{source.id}_y{origin[0]:04d}_x{origin[1]:04d}",
            split=source.split,
            group=source.group,
            source=source.id,
            origin=origin,
            source_shape=source.shape,
        )
