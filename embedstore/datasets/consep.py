"""CoNSeP: 41 H&E tiles of 1000x1000 at 40x from colorectal adenocarcinoma, with 7 nucleus types.

Layout (as released by TIA Warwick)::

    <data_dir>/{Train,Test}/Images/<name>.png   RGB or RGBA
    <data_dir>/{Train,Test}/Labels/<name>.mat   inst_map, type_map (per pixel), inst_type, inst_centroid
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedstore.datasets.base import Arrays, DatasetInfo, Source, TiledDataset
from embedstore.datasets.readers import image_shape, list_files, read_image, read_label, require_dir
from embedstore.errors import EmbedstoreError

INFO = DatasetInfo(
    name="consep",
    magnification="40x",
    um_per_px=0.25,
    classes=("Other", "Inflammatory", "Epithelial", "Spindle"),
    source="CoNSeP, Graham et al. 2019 (HoVer-Net, Medical Image Analysis 58:101563), TIA Warwick, "
    "research use with citation",
)
#: HoVer-Net's merge of CoNSeP's 7 types: 1 other, 2 inflammatory, 3+4 epithelial, 5+6+7 spindle-shaped.
MERGE = np.array([0, 1, 2, 3, 3, 4, 4, 4], dtype=np.uint8)
DEFAULT_VAL = "train_7,train_14,train_21"


def merged(types: np.ndarray, path: Path) -> np.ndarray:
    """Map CoNSeP type ids 0..7 to the merged ids 0..4 (:data:`MERGE`); (H, W) int -> (H, W) uint8."""
    if types.size and types.max() >= len(MERGE):
        raise EmbedstoreError(f"type_map in {path} holds id {int(types.max())}; CoNSeP types are 0..7")
    return MERGE[types]


def _load(image: Path, label: Path, merge: bool) -> Arrays:
    instance, types = read_label(label)
    if types is None:
        raise EmbedstoreError(f"label {label} has no 'type_map'")
    return read_image(image), instance, merged(types, label) if merge else types.astype(np.uint8)


def consep(
    data_dir: Path,
    tile_size: int = 256,
    stride: int | None = None,
    *,
    val_images: str | Sequence[str] = DEFAULT_VAL,
    merge_types: bool = True,
) -> TiledDataset:
    """CoNSeP in its native layout: Train -> train (except ``val_images``, held out as val), Test -> test.

    ``val_images`` lists Train image stems (comma string or list; "" for none). The default holds out
    every 7th training image (train_7, train_14, train_21: 1,462 nuclei, all four merged classes).
    ``merge_types`` applies HoVer-Net's 4-class merge (:data:`MERGE`); set it False for copies whose type maps
    are already merged (values 0..4). Group = source image.
    """
    require_dir(data_dir, "CoNSeP data")
    held_out = [v.strip() for v in (val_images.split(",") if isinstance(val_images, str) else val_images) if v.strip()]
    sources: list[Source] = []
    for part in ("Train", "Test"):
        images = list_files(require_dir(data_dir / part / "Images", f"CoNSeP {part} images"), (".png",))
        labels_dir = require_dir(data_dir / part / "Labels", f"CoNSeP {part} labels")
        for stem, path in images.items():
            label = labels_dir / f"{stem}.mat"
            if not label.is_file():
                raise EmbedstoreError(f"missing CoNSeP label file: {label}")
            split = "test" if part == "Test" else "val" if stem in held_out else "train"
            load = functools.partial(_load, path, label, merge_types)
            sources.append(Source(stem, image_shape(path), split, stem, load, f"{path} and {label}"))
    unknown = sorted(set(held_out) - {s.id for s in sources if s.split != "test"})
    if unknown:
        raise EmbedstoreError(
            f"option val_images names {unknown}, which are not images of {data_dir / 'Train' / 'Images'}"
        )
    return TiledDataset(INFO, sources, tile_size, stride)
