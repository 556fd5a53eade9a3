"""CytoDArk0: Nissl-stained mammalian brain sections with neuron and glia instances (no cell classes).

Layout (Zenodo 10.5281/zenodo.13694738, ``cytoDArk0.zip``)::

    <data_dir>/{20x,40x}/<S>x<S>/image/<id>.png     RGB
    <data_dir>/{20x,40x}/<S>x<S>/label/<id>.tiff    instance ids
    <data_dir>/{20x,40x}/<S>x<S>/folds.csv          img_id,fold (0 train, 1 val, 2 test), img_id = file stem

``data_dir`` may also be the folder that holds ``cytoDArk0/``. Source images are 1024x1024 at 20x and
2048x2048 at 40x; ids look like ``ID14_Aud_Cortex_Tursiops``.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from embedstore.datasets.base import Arrays, DatasetInfo, Source, TiledDataset
from embedstore.datasets.readers import (
    IMAGE_SUFFIXES,
    LABEL_SUFFIXES,
    image_shape,
    list_files,
    read_folds_csv,
    read_image,
    read_label,
    require_dir,
    require_file,
    splits_for,
)
from embedstore.errors import EmbedstoreError

SOURCE = "CytoDArk0, Vadori et al. 2024 (arXiv:2409.04175), Zenodo 10.5281/zenodo.13694738"
#: magnification -> (um per px, side of the full-size images)
SCALES = {"20x": (0.548, 1024), "40x": (0.274, 2048)}
#: Brain area by image number, from cytoDArk0_metadata.xlsx (the same numbering at 20x and 40x).
AREAS = ((range(1, 54), "Auditory Cortex"), (range(54, 58), "Cerebellum"), (range(58, 62), "Hippocampus"),
         (range(62, 70), "Visual Cortex"))


def area_of(image_id: str) -> str | None:
    """Brain area of an image id such as ``ID14_Aud_Cortex_Tursiops`` (or a tile of it), None if unknown."""
    match = re.match(r"ID(\d+)(?:_|$)", image_id)
    number = int(match.group(1)) if match else 0
    return next((area for ids, area in AREAS if number in ids), None)


def _load(image: Path, label: Path) -> Arrays:
    return read_image(image), read_label(label)[0], None


def cytodark0(
    data_dir: Path,
    tile_size: int = 256,
    stride: int | None = None,
    *,
    magnification: str = "20x",
    raw_size: int | None = None,
) -> TiledDataset:
    """CytoDArk0 at one magnification; group = brain area (from the image number; the id when unknown).

    ``raw_size`` picks the ``<S>x<S>`` folder (default: the full images, 1024 at 20x, 2048 at 40x); the
    smaller pre-cut folders (256, 512) work too, each file then being its own source.
    """
    if magnification not in SCALES:
        raise EmbedstoreError(f"option magnification={magnification!r}: expected one of {sorted(SCALES)}")
    um_per_px, full_size = SCALES[magnification]
    if (data_dir / "cytoDArk0").is_dir():
        data_dir = data_dir / "cytoDArk0"
    size = raw_size or full_size
    require_dir(data_dir, "CytoDArk0 data")
    folder = require_dir(data_dir / magnification / f"{size}x{size}", "CytoDArk0 image size")
    images = list_files(require_dir(folder / "image", "CytoDArk0 image"), IMAGE_SUFFIXES)
    labels = list_files(require_dir(folder / "label", "CytoDArk0 label"), LABEL_SUFFIXES)
    missing = [stem for stem in images if stem not in labels]
    if missing:
        raise EmbedstoreError(
            f"no label in {folder / 'label'} for images {missing[:3]} (expected e.g. {missing[0]}.tiff)"
        )
    folds_csv = require_file(folder / "folds.csv", "CytoDArk0 folds")
    splits = splits_for(list(images), read_folds_csv(folds_csv), folds_csv)
    sources = [
        Source(
            stem, image_shape(path), split, area_of(stem) or stem, functools.partial(_load, path, labels[stem]),
            f"{path} and {labels[stem]}",
        )
        for (stem, path), split in zip(images.items(), splits)
    ]
    info = DatasetInfo("cytodark0", magnification, um_per_px, (), SOURCE)
    return TiledDataset(info, sources, tile_size, stride)
