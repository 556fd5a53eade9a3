"""Any dataset laid out as a folder of images and same-stem instance masks.

Layout::

    <data_dir>/images/<stem>.{png,tif,tiff,jpg,npy}
    <data_dir>/labels/<stem>.{png,tif,tiff,npy,mat}   instance ids (a .mat or pickled .npy dict may also carry type_map)
    <data_dir>/classes/<stem>.{png,tif,tiff,npy}      optional per-pixel class ids 1..K
    <data_dir>/folds.csv                               optional img_id,fold (0 train, 1 val, 2 test)
"""

from __future__ import annotations

import functools
from pathlib import Path

from embedstore.datasets.base import Arrays, DatasetInfo, Source, TiledDataset
from embedstore.datasets.readers import (
    IMAGE_SUFFIXES,
    LABEL_SUFFIXES,
    image_shape,
    list_files,
    read_class_map,
    read_folds_csv,
    read_image,
    read_label,
    require_dir,
    splits_for,
)
from embedstore.errors import EmbedstoreError

#: Default pixel size per magnification when ``um_per_px`` is not given.
UM_PER_PX = {"20x": 0.5, "40x": 0.25}


def _load(image: Path, label: Path, class_map: Path | None, with_classes: bool, allow_pickle: bool) -> Arrays:
    instance, types = read_label(label, allow_pickle)
    if not with_classes:
        return read_image(image), instance, None
    if class_map is not None:
        return read_image(image), instance, read_class_map(class_map)
    if types is None:
        raise EmbedstoreError(
            f"classes were given but {label} holds no type_map and there is no class map file for it in classes/"
        )
    return read_image(image), instance, types


def folder(
    data_dir: Path,
    tile_size: int = 256,
    stride: int | None = None,
    *,
    magnification: str = "40x",
    um_per_px: float | None = None,
    classes: str = "",
    allow_pickle: bool = False,
) -> TiledDataset:
    """Images with same-stem instance masks; group = source = file stem.

    ``classes`` names class ids 1..K (comma string); when given, class maps come from ``classes/`` or
    from the label file's ``type_map``, else tiles have ``cls=None``. ``um_per_px`` defaults to 0.5 at
    20x and 0.25 at 40x. Splits come from ``folds.csv`` (every image must be listed) or are all train.
    ``allow_pickle`` permits pickled ``.npy`` label dicts; only set it for files you trust.
    """
    if magnification not in UM_PER_PX:
        raise EmbedstoreError(f"option magnification={magnification!r}: expected one of {sorted(UM_PER_PX)}")
    um_per_px = UM_PER_PX[magnification] if um_per_px is None else um_per_px
    names = tuple(c.strip() for c in classes.split(",") if c.strip())
    require_dir(data_dir, "folder dataset")
    images = list_files(require_dir(data_dir / "images", "images"), IMAGE_SUFFIXES)
    labels = list_files(require_dir(data_dir / "labels", "labels"), LABEL_SUFFIXES)
    if not images:
        raise EmbedstoreError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {data_dir / 'images'}")
    class_maps = list_files(data_dir / "classes", IMAGE_SUFFIXES) if (data_dir / "classes").is_dir() else {}
    missing = [stem for stem in images if stem not in labels]
    if missing:
        raise EmbedstoreError(f"no label in {data_dir / 'labels'} for images {missing[:3]}")
    folds_csv = data_dir / "folds.csv"
    if folds_csv.is_file():
        splits = splits_for(list(images), read_folds_csv(folds_csv), folds_csv)
    else:
        splits = ["train"] * len(images)
    sources = [
        Source(
            stem,
            image_shape(path),
            split,
            stem,
            functools.partial(_load, path, labels[stem], class_maps.get(stem), bool(names), allow_pickle),
            f"{path} and {labels[stem]}" + (f" and {class_maps[stem]}" if stem in class_maps else ""),
        )
        for (stem, path), split in zip(images.items(), splits)
    ]
    info = DatasetInfo("folder", magnification, float(um_per_px), names, f"local folder {data_dir}")
    return TiledDataset(info, sources, tile_size, stride)
