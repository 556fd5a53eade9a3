"""CoNIC (Lizard patches): 4,981 H&E tiles of 256x256 at 20x with 6 nucleus classes.

Layout (the CoNIC challenge training release)::

    <data_dir>/images.npy       (n, 256, 256, 3) uint8 RGB
    <data_dir>/labels.npy       (n, 256, 256, 2) instance ids, class ids
    <data_dir>/patch_info.csv   one column of patch names such as ``dpath_12-0059``

A patch name is ``<cohort>_<image>-<patch>``; the part before ``-`` is its source image.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np

from embedstore.datasets.base import Arrays, DatasetInfo, Source, TiledDataset
from embedstore.datasets.readers import open_npy, read_folds_csv, require_dir, require_file, splits_for
from embedstore.errors import EmbedstoreError

INFO = DatasetInfo(
    name="conic",
    magnification="20x",
    um_per_px=0.5,
    classes=("Neutrophil", "Epithelial", "Lymphocyte", "Plasma", "Eosinophil", "Connective"),
    source="CoNIC challenge / Lizard, Graham et al. 2021 (arXiv:2111.14781), CC BY-NC-SA 4.0, "
    "https://conic-challenge.grand-challenge.org",
)


def _load(images: Path, labels: Path, index: int) -> Arrays:
    label = np.asarray(open_npy(labels)[index])
    return np.asarray(open_npy(images)[index]), label[..., 0].astype(np.int32), label[..., 1].astype(np.uint8)


def _patch_names(path: Path) -> list[str]:
    try:
        with open(require_file(path, "CoNIC patch list"), newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise EmbedstoreError(f"cannot read CoNIC patch list {path}: {e}") from e
    return [row[0].strip() for row in rows[1:] if row]


def split_by_source(names: list[str], val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """Split patches by source image, stratified by cohort, reproducibly.

    Within each cohort (sorted), the sorted source images are shuffled with one seeded generator;
    the first ``round(n * test_fraction)`` go to test, the next ``round(n * val_fraction)`` to val,
    the rest to train. All patches of a source share its split.
    """
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise EmbedstoreError(
            f"options val_fraction={val_fraction} and test_fraction={test_fraction} must be >= 0 and sum to < 1"
        )
    images = sorted({n.split("-")[0] for n in names})
    cohorts = sorted({i.split("_")[0] for i in images})
    rng = np.random.default_rng(seed)
    split_of: dict[str, str] = {}
    for cohort in cohorts:
        members = [images[j] for j in rng.permutation(len(images)) if images[j].split("_")[0] == cohort]
        n_test, n_val = round(len(members) * test_fraction), round(len(members) * val_fraction)
        for k, image in enumerate(members):
            split_of[image] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
    return [split_of[n.split("-")[0]] for n in names]


def conic(
    data_dir: Path,
    tile_size: int = 256,
    stride: int | None = None,
    *,
    val_fraction: float = 0.08,
    test_fraction: float = 0.2,
    seed: int = 0,
    split_csv: str | None = None,
) -> TiledDataset:
    """CoNIC from its npy release; group = source image (name before ``-``), source = patch name.

    Split by source image with :func:`split_by_source` (defaults give the paper's 80/20 then 90/10
    proportions), or from ``split_csv``, a CISCA ``img_id,fold`` table keyed by patch name.
    """
    require_dir(data_dir, "CoNIC data")
    images, labels = data_dir / "images.npy", data_dir / "labels.npy"
    names = _patch_names(data_dir / "patch_info.csv")
    ishape, lshape = open_npy(images).shape, open_npy(labels).shape
    if len(ishape) != 4 or ishape[3] != 3 or lshape != (*ishape[:3], 2) or len(names) != ishape[0]:
        raise EmbedstoreError(
            f"CoNIC: {images} {ishape}, {labels} {lshape} and {len(names)} names in patch_info.csv do not agree; "
            "expected (n, H, W, 3), (n, H, W, 2) and n names"
        )
    if split_csv is None:
        splits = split_by_source(names, val_fraction, test_fraction, seed)
    else:
        splits = splits_for(names, read_folds_csv(Path(split_csv)), Path(split_csv))
    sources = [
        Source(
            name, ishape[1:3], split, name.split("-")[0], functools.partial(_load, images, labels, i),
            f"{images} and {labels}, row {i}",
        )
        for i, (name, split) in enumerate(zip(names, splits))
    ]
    return TiledDataset(INFO, sources, tile_size, stride)
