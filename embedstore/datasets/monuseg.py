"""MoNuSeg 2018: H&E tiles of 1000x1000 at 40x (TCGA, several organs) with nucleus polygons, no classes.

Layouts accepted::

    <data_dir>/<TCGA id>.tif + <TCGA id>.xml                         (MoNuSegTestData)
    <data_dir>/Tissue Images/<TCGA id>.tif + Annotations/<TCGA id>.xml   (MoNuSeg 2018 Training Data)

Each ``.xml`` is an Aperio ImageScope annotation with one ``<Region>`` polygon per nucleus.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from skimage.draw import polygon

from embedstore.datasets.base import Arrays, DatasetInfo, Source, TiledDataset
from embedstore.datasets.readers import FOLD_SPLITS, image_shape, list_files, read_image, require_dir
from embedstore.errors import EmbedstoreError

INFO = DatasetInfo(
    name="monuseg",
    magnification="40x",
    um_per_px=0.25,
    classes=(),
    source="MoNuSeg, Kumar et al. 2017 (IEEE TMI 36:1550) / MICCAI 2018 challenge, CC BY-NC-SA 4.0, "
    "https://monuseg.grand-challenge.org",
)


def read_regions(path: Path) -> list[np.ndarray]:
    """Polygons of an Aperio XML, in file order, each (n, 2) float (x, y) in pixels."""
    try:
        root = ElementTree.parse(path).getroot()
        regions = [[(float(v.get("X")), float(v.get("Y"))) for v in r.iter("Vertex")] for r in root.iter("Region")]
        return [np.array(vertices, dtype=float).reshape(-1, 2) for vertices in regions]
    except (OSError, ElementTree.ParseError, TypeError, ValueError) as e:
        raise EmbedstoreError(f"cannot read annotation {path}: {e}") from e


def rasterise(regions: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Instance map (H, W) int32 with region k (file order) filled as id k+1.

    Filled with ``skimage.draw.polygon`` (pixel centres inside the polygon), clipped to the image. Where
    polygons overlap, the later region overwrites the earlier one; an earlier region cut in two by
    that becomes two instances after the tile relabelling.
    """
    instance = np.zeros(shape, dtype=np.int32)
    for k, vertices in enumerate(regions, start=1):
        rows, cols = polygon(vertices[:, 1], vertices[:, 0], shape=shape)
        instance[rows, cols] = k
    return instance


def _load(image_path: Path, xml_path: Path) -> Arrays:
    image = read_image(image_path)
    return image, rasterise(read_regions(xml_path), image.shape[:2]), None


def _stems(names: str | Sequence[str]) -> list[str]:
    """``"a, b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (blank names dropped)."""
    return [v.strip() for v in (names.split(",") if isinstance(names, str) else names) if v.strip()]


def monuseg(data_dir: Path, tile_size: int = 256, stride: int | None = None, *, split: str = "test",
            val_images: str | Sequence[str] = "", test_images: str | Sequence[str] = "") -> TiledDataset:
    """MoNuSeg images with their polygon annotations; every image in ``split``, group = source image.

    ``val_images`` and ``test_images`` list image stems (TCGA ids; comma string or list) held out as "val"
    or "test" whatever ``split`` says, so one folder gives train/val/test (``split=train``,
    ``val_images=<id>``, ``test_images=<id>,<id>``).
    """
    if split not in FOLD_SPLITS.values():
        raise EmbedstoreError(f"option split={split!r}: expected one of {list(FOLD_SPLITS.values())}")
    require_dir(data_dir, "MoNuSeg data")
    held_out = {name: "val" for name in _stems(val_images)} | {name: "test" for name in _stems(test_images)}
    both = sorted(set(_stems(val_images)) & set(_stems(test_images)))
    if both:
        raise EmbedstoreError(f"options val_images and test_images both name {both}")
    images_dir = data_dir / "Tissue Images" if (data_dir / "Tissue Images").is_dir() else data_dir
    xml_dir = data_dir / "Annotations" if (data_dir / "Annotations").is_dir() else data_dir
    images = list_files(images_dir, (".tif", ".tiff", ".png"))
    if not images:
        raise EmbedstoreError(f"no .tif images in {images_dir}")
    unknown = sorted(set(held_out) - set(images))
    if unknown:
        raise EmbedstoreError(f"options val_images / test_images name {unknown}, which are not images of {images_dir}")
    sources = []
    for stem, path in images.items():
        xml = xml_dir / f"{stem}.xml"
        if not xml.is_file():
            raise EmbedstoreError(f"missing MoNuSeg annotation file: {xml}")
        load = functools.partial(_load, path, xml)
        sources.append(Source(stem, image_shape(path), held_out.get(stem, split), stem, load,
                              f"{path} and {xml}"))
    return TiledDataset(INFO, sources, tile_size, stride)
