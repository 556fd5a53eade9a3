"""PanNuke: 7,901 H&E tiles of 256x256 at 40x from 19 tissues, in the three official folds of npy arrays.

Layout (as unzipped from the official release)::

    <data_dir>/Fold N/images/foldN/images.npy   (n, 256, 256, 3) float RGB 0..255
    <data_dir>/Fold N/images/foldN/types.npy    (n,) tissue names
    <data_dir>/Fold N/masks/foldN/masks.npy     (n, 256, 256, 6) 5 class-wise instance channels + background

Arrays are memory-mapped, so listing the dataset reads only the headers and the tissue names.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np

from embedstore.datasets.base import Arrays, DatasetInfo, Source, TiledDataset
from embedstore.datasets.readers import FOLD_SPLITS, as_rgb_uint8, open_npy, read_folds_csv, require_dir, splits_for
from embedstore.errors import EmbedstoreError

INFO = DatasetInfo(
    name="pannuke",
    magnification="40x",
    um_per_px=0.25,
    classes=("Neoplastic", "Inflammatory", "Connective", "Dead", "Epithelial"),
    source="PanNuke, Gamper et al. 2019/2020 (arXiv:2003.10778), CC BY-NC-SA 4.0, "
    "https://warwick.ac.uk/fac/cross_fac/tia/data/pannuke",
)


def masks_to_maps(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Instance and class maps from one PanNuke mask stack.

    Channel c (0..4) holds the instance ids of class c+1; channel 5 is background and ignored. Where
    channels overlap, the later channel wins in both maps (as in CISCA's converter for the class map).
    Ids of channel c are offset by ``c * (max id + 1)`` so that no two channels share an id; the tile
    relabelling then makes them 1..n.

    Parameters
    ----------
    masks : (H, W, 6) numeric array.

    Returns
    -------
    instance : (H, W) int32; cls : (H, W) uint8 in 0..5.
    """
    channels = np.asarray(masks[..., :5]).astype(np.int64)
    offset = int(channels.max(initial=0)) + 1
    instance = np.zeros(channels.shape[:2], dtype=np.int64)
    cls = np.zeros(channels.shape[:2], dtype=np.uint8)
    for c in range(5):
        on = channels[..., c] > 0
        instance[on] = c * offset + channels[..., c][on]
        cls[on] = c + 1
    return instance.astype(np.int32), cls


def _load(images: Path, masks: Path, index: int) -> Arrays:
    image = as_rgb_uint8(np.asarray(open_npy(images)[index]), images)
    instance, cls = masks_to_maps(open_npy(masks)[index])
    return image, instance, cls


def _parse_split_folds(spec: str) -> dict[int, str]:
    folds: dict[int, str] = {}
    for item in spec.split(","):
        fold, _, split = item.strip().partition(":")
        if not fold.strip().isdigit() or int(fold) not in (1, 2, 3) or split.strip() not in FOLD_SPLITS.values():
            raise EmbedstoreError(
                f"option split_folds={spec!r}: expected items like '1:train' with folds 1..3 and splits train/val/test"
            )
        folds[int(fold)] = split.strip()
    return folds


def _fold_sources(data_dir: Path, fold: int, split: str) -> list[Source]:
    """One source per tile of fold ``fold``, all in ``split``."""
    images_dir = require_dir(data_dir / f"Fold {fold}" / "images" / f"fold{fold}", f"PanNuke fold {fold} images")
    masks_dir = require_dir(data_dir / f"Fold {fold}" / "masks" / f"fold{fold}", f"PanNuke fold {fold} masks")
    images, masks, types = images_dir / "images.npy", masks_dir / "masks.npy", images_dir / "types.npy"
    shape, mshape, tissues = open_npy(images).shape, open_npy(masks).shape, open_npy(types)
    if len(shape) != 4 or shape[3] != 3 or mshape[:3] != shape[:3] or mshape[3:] != (6,) or len(tissues) != shape[0]:
        raise EmbedstoreError(
            f"PanNuke fold {fold}: {images} {shape}, {masks} {mshape} and {types} ({len(tissues)}) do not agree; "
            "expected (n, H, W, 3), (n, H, W, 6) and (n,)"
        )
    return [
        Source(
            f"pannuke_{t.lower()}_fold{fold}_{i}", shape[1:3], split, t, functools.partial(_load, images, masks, i),
            f"{images} and {masks}, row {i}",
        )
        for i, t in enumerate(str(t) for t in tissues)
    ]


def pannuke(
    data_dir: Path,
    tile_size: int = 256,
    stride: int | None = None,
    *,
    split_folds: str = "1:train,2:val,3:test",
    split_csv: str | None = None,
) -> TiledDataset:
    """PanNuke in its official fold layout; group = tissue, source id ``pannuke_<tissue>_fold<k>_<i>``.

    Splits come from ``split_folds`` (``fold:split`` items; unlisted folds are left out) or, when given,
    from ``split_csv``: a CISCA ``img_id,fold`` table (fold 0 train, 1 val, 2 test) whose ids are
    ``pannuke_<tissue lower-case>_fold<k>_<i>`` with ``i`` the 0-based row in fold k's arrays, as in the
    pooled split of the CISCA paper. That table must list every tile; repeated rows count once.
    """
    require_dir(data_dir, "PanNuke data")
    if split_csv is None:
        folds = _parse_split_folds(split_folds)
        sources = [s for fold in sorted(folds) for s in _fold_sources(data_dir, fold, folds[fold])]
        return TiledDataset(INFO, sources, tile_size, stride)
    sources = [s for fold in (1, 2, 3) for s in _fold_sources(data_dir, fold, "")]
    table = read_folds_csv(Path(split_csv))
    unknown = set(table) - {s.id for s in sources}
    if unknown:
        raise EmbedstoreError(
            f"split_csv {split_csv} lists {len(unknown)} ids that match no PanNuke tile, e.g. {sorted(unknown)[:3]}; "
            "expected ids pannuke_<tissue>_fold<k>_<i>"
        )
    splits = splits_for([s.id for s in sources], table, Path(split_csv))
    sources = [dataclasses.replace(s, split=split) for s, split in zip(sources, splits)]
    return TiledDataset(INFO, sources, tile_size, stride)
