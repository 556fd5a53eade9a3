"""Read images, label maps and fold tables from disk, turning every failure a user can cause into EmbedstoreError.

Images come back as (H, W, 3) uint8 RGB whatever their file format; label maps as (H, W) integer arrays.
Each function names the file it failed on.
"""

from __future__ import annotations

import csv
import functools
import re
from pathlib import Path

import numpy as np
import scipy.io
import tifffile
from PIL import Image

from embedstore.errors import EmbedstoreError

#: Picture files (what `embed predict` reads): png, jpeg, tiff.
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Dataset image files: pictures and numpy arrays.
IMAGE_SUFFIXES = (*PICTURE_SUFFIXES, ".npy")
LABEL_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".mat")
#: ``fold`` column of a folds.csv (CISCA convention) -> split name.
FOLD_SPLITS = {0: "train", 1: "val", 2: "test"}
_READ_ERRORS = (OSError, ValueError, EOFError, SyntaxError, KeyError, scipy.io.matlab.MatReadError)


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a directory, else EmbedstoreError naming it and what it should hold."""
    if not path.is_dir():
        raise EmbedstoreError(f"missing {what} directory: {path}")
    return path


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else EmbedstoreError naming it and what it should hold."""
    if not path.is_file():
        raise EmbedstoreError(f"missing {what} file: {path}")
    return path


def natural_key(text: str) -> list:
    """Sort key that orders embedded numbers by value (``train_2`` before ``train_10``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def list_files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Files of ``folder`` with one of ``suffixes`` (case-insensitive), keyed by stem, in natural order."""
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in suffixes), key=lambda p: natural_key(p.stem))
    by_stem: dict[str, Path] = {}
    for p in files:
        if p.stem in by_stem:
            raise EmbedstoreError(f"two files share the stem {p.stem!r}: {by_stem[p.stem]} and {p}")
        by_stem[p.stem] = p
    return by_stem


def image_shape(path: Path) -> tuple[int, int]:
    """(H, W) of an image file read from its header only, so listing a dataset decodes no pixels."""
    try:
        suffix = path.suffix.lower()
        if suffix == ".npy":
            shape = np.load(path, mmap_mode="r").shape
            return int(shape[0]), int(shape[1])
        if suffix in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                return int(series.shape[series.axes.index("Y")]), int(series.shape[series.axes.index("X")])
        with Image.open(path) as im:
            return im.height, im.width
    except _READ_ERRORS as e:
        raise EmbedstoreError(f"cannot read image {path}: {e}") from e


def as_rgb_uint8(array: np.ndarray, path: Path) -> np.ndarray:
    """(H, W, 3) uint8 from grey, RGB or RGBA arrays of 8-bit values in any numeric dtype (PanNuke's are float64)."""
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[2] not in (3, 4):
        array = np.moveaxis(array, 0, -1)  # planar TIFF
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise EmbedstoreError(f"image {path} has shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    array = array[..., :3]
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise EmbedstoreError(f"image {path} holds values outside 0..255 ({array.dtype}); expected 8-bit RGB")
        array = np.rint(array).astype(np.uint8)
    return np.ascontiguousarray(array)


def _decode(path: Path, what: str, rgb: bool) -> np.ndarray:
    """Raw array of an npy, tif or PIL-readable file; ``rgb`` converts PIL images to 8-bit RGB."""
    try:
        suffix = path.suffix.lower()
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix in (".tif", ".tiff"):
            return tifffile.imread(path)
        with Image.open(path) as im:
            if not rgb:
                return np.asarray(im)
            if im.mode not in ("RGB", "RGBA", "L", "LA", "P"):
                raise EmbedstoreError(f"image {path} has mode {im.mode}; expected 8-bit RGB, RGBA or grey")
            return np.asarray(im.convert("RGB"))
    except _READ_ERRORS as e:
        raise EmbedstoreError(f"cannot read {what} {path}: {e}") from e


def read_image(path: Path) -> np.ndarray:
    """Decode an image file (png, jpg, tif, npy) to (H, W, 3) uint8 RGB; alpha is dropped, grey repeated."""
    return as_rgb_uint8(_decode(path, "image", rgb=True), path)


def _as_map(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array.reshape(array.shape[:2] if array.shape[-1] == 1 else array.shape[1:])
    if array.ndim != 2:
        raise EmbedstoreError(f"{what} {path} has shape {array.shape}; expected a single-channel (H, W) map")
    if not (np.issubdtype(array.dtype, np.integer) or np.all(array == np.round(array))):
        raise EmbedstoreError(f"{what} {path} holds non-integer values; expected integer ids")
    if array.size and array.min() < 0:
        raise EmbedstoreError(f"{what} {path} holds negative ids")
    return array


def read_label(path: Path, allow_pickle: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Instance map and, when the file carries one, per-pixel type map.

    Accepts a single-channel png/tif/npy instance map, a HoVer-Net-style ``.mat`` (``inst_map`` and
    optional ``type_map``) or a pickled ``.npy`` dict with the same keys (CellViT/NuCLS; only read when
    ``allow_pickle`` is set, since unpickling runs code from the file).

    Returns
    -------
    instance : (H, W) int32; types : (H, W) int32 or None.
    """
    try:
        suffix = path.suffix.lower()
        if suffix == ".mat":
            content = scipy.io.loadmat(path)
        elif suffix == ".npy":
            try:
                content = np.load(path, allow_pickle=allow_pickle)
            except ValueError as e:
                if "allow_pickle" not in str(e):
                    raise
                raise EmbedstoreError(
                    f"label {path} is a pickled object; pass allow_pickle=True if you trust this file"
                ) from e
            if content.dtype == object:
                content = content.item()
        elif suffix in (".tif", ".tiff"):
            content = tifffile.imread(path)
        else:
            with Image.open(path) as im:
                content = np.asarray(im)
    except _READ_ERRORS as e:
        raise EmbedstoreError(f"cannot read label {path}: {e}") from e
    if isinstance(content, dict):
        if "inst_map" not in content:
            keys = sorted(k for k in content if not k.startswith("__"))
            raise EmbedstoreError(f"label {path} has no 'inst_map' (keys: {keys})")
        types = content.get("type_map")
        instance = _as_map(content["inst_map"], path, "label")
        return instance.astype(np.int32), None if types is None else _as_map(types, path, "type map").astype(np.int32)
    return _as_map(content, path, "label").astype(np.int32), None


def read_class_map(path: Path) -> np.ndarray:
    """Per-pixel class ids (H, W) int32 from a single-channel png/tif/npy file."""
    return _as_map(_decode(path, "class map", rgb=False), path, "class map").astype(np.int32)


def read_folds_csv(path: Path) -> dict[str, str]:
    """``img_id -> split`` from a CISCA-style ``img_id,fold`` table (0 train, 1 val, 2 test).

    Repeated rows (CISCA's oversampled training lists) collapse to one; an id listed in two different
    folds is an error.
    """
    splits: dict[str, str] = {}
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise EmbedstoreError(f"cannot read folds table {path}: {e}") from e
    for n, row in enumerate(rows, start=2):
        try:
            img_id, split = row["img_id"].strip(), FOLD_SPLITS[int(row["fold"])]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise EmbedstoreError(
                f"folds table {path} line {n}: expected columns img_id,fold with fold in 0/1/2, got {row}"
            ) from e
        if splits.setdefault(img_id, split) != split:
            raise EmbedstoreError(f"folds table {path}: {img_id} is listed in both {splits[img_id]} and {split}")
    return splits


def splits_for(ids: list[str], table: dict[str, str], path: Path) -> list[str]:
    """The split of every id from a folds table; EmbedstoreError naming the table if any id is missing."""
    missing = [i for i in ids if i not in table]
    if missing:
        raise EmbedstoreError(f"folds table {path} does not list {len(missing)} samples, e.g. {missing[:3]}")
    return [table[i] for i in ids]


@functools.lru_cache(maxsize=16)
def open_npy(path: Path) -> np.ndarray:
    """Memory-map a plain ``.npy`` array (cached per process) so datasets can index it without loading it."""
    require_file(path, "array")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except _READ_ERRORS as e:
        raise EmbedstoreError(f"cannot read array {path}: {e}") from e
