"""Write predicted cells to the files people open elsewhere: label TIFF, per-cell CSV, QuPath GeoJSON, overlay PNG.

Everything here takes a whole-image instance map ((H, W) integer ids, 0 = background) plus one
:class:`Cell` record per instance, so the writers serve any model or post-processing.

Coordinates. The CSV gives centroids as (row, column) of pixel centres, like ``regionprops``. The GeoJSON
polygons use QuPath's pixel-corner convention in x, y order: pixel (r, c) covers [c, c + 1) x [r, r + 1),
so a polygon traced through pixel centres is shifted by half a pixel.
"""

from __future__ import annotations

import csv
import json
import uuid
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage as ndi
from skimage.measure import find_contours
from skimage.segmentation import find_boundaries

#: Class colours (RGB) for class ids 1, 2, ...; repeats after the tenth class.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
)
OBJECT_TYPES = ("cell", "detection")
_NAMESPACE = uuid.UUID("5b0f7c1e-3d2a-4c55-9a57-6f1f5d2e8c11")  # fixed: the same prediction gives the same ids


@dataclass(frozen=True)
class Cell:
    """One predicted cell (a row of the CSV).

    Attributes
    ----------
    id : instance id in the label map.
    class_id : 1..K (the class head's argmax, see ``postprocess.classify_instances``).
    class_name : the run's name for ``class_id``.
    centroid_y, centroid_x : mean row / column of the instance's pixel centres.
    area : pixels.
    probability : mean probability of ``class_id`` over the instance's pixels.
    """

    id: int
    class_id: int
    class_name: str
    centroid_y: float
    centroid_x: float
    area: int
    probability: float


def class_color(class_id: int) -> tuple[int, int, int]:
    """RGB colour of a class id (1-based) from :data:`PALETTE`."""
    return PALETTE[(class_id - 1) % len(PALETTE)]


def cell_records(instances: np.ndarray, per_instance: dict[int, tuple[int, float]],
                 class_names: tuple[str, ...]) -> list[Cell]:
    """One :class:`Cell` per instance, in increasing id order.

    Parameters
    ----------
    instances : (H, W) integer instance ids, 0 = background.
    per_instance : id -> (class id 1..K, mean class probability); every id of ``instances``.
    class_names : names of classes 1..K.
    """
    flat = instances.ravel()
    area = np.bincount(flat)
    ids = np.flatnonzero(area)
    ids = ids[ids > 0]
    rows, cols = np.indices(instances.shape)
    cy = np.bincount(flat, weights=rows.ravel(), minlength=area.size)
    cx = np.bincount(flat, weights=cols.ravel(), minlength=area.size)
    cells = []
    for i in ids:
        class_id, probability = per_instance[int(i)]
        cells.append(Cell(id=int(i), class_id=class_id, class_name=class_names[class_id - 1],
                          centroid_y=float(cy[i] / area[i]), centroid_x=float(cx[i] / area[i]),
                          area=int(area[i]), probability=float(probability)))
    return cells


def write_label_tiff(path: Path, instances: np.ndarray) -> None:
    """(H, W) instance ids as a zlib-compressed int32 TIFF."""
    tifffile.imwrite(path, np.asarray(instances, np.int32), compression="zlib")


def write_cells_csv(path: Path, cells: list[Cell]) -> None:
    """One row per cell: ``id, class, class_name, centroid_y, centroid_x, area, class_probability``."""
    header = ["id", "class", "class_name", "centroid_y", "centroid_x", "area", "class_probability"]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for cell in cells:
            row = list(astuple(cell))
            row[3:5] = [round(row[3], 2), round(row[4], 2)]
            row[6] = round(row[6], 4)
            writer.writerow(row)


def instance_polygons(instances: np.ndarray) -> dict[int, list[list[float]]]:
    """Outer outline of every instance as one closed ring of [x, y] vertices (pixel-corner coordinates).

    The outline is the 0.5 iso-line of the instance's mask (``skimage.measure.find_contours``), which runs
    through the mid-points between pixel centres. An instance in several 4-connected pieces (watershed
    can leave a stray piece) is outlined by its largest piece, and holes are filled first, so each
    instance gives exactly one ring. Rings are counter-clockwise in (x, y) and end on their first vertex,
    as GeoJSON wants.
    """
    polygons: dict[int, list[list[float]]] = {}
    for index, box in enumerate(ndi.find_objects(instances), start=1):
        if box is None:
            continue
        pieces, n = ndi.label(np.pad(instances[box] == index, 1))
        largest = np.argmax(np.bincount(pieces.ravel())[1:]) + 1 if n > 1 else 1
        mask = ndi.binary_fill_holes(pieces == largest).astype(np.float32)
        (ring,) = find_contours(mask, 0.5)
        xy = ring[:, ::-1] + [box[1].start - 0.5, box[0].start - 0.5]  # -1 padding, +0.5 corner convention
        x, y = xy[:, 0], xy[:, 1]
        if np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]) < 0:  # shoelace: negative = clockwise
            xy = xy[::-1]
        if not np.array_equal(xy[0], xy[-1]):
            xy = np.vstack([xy, xy[:1]])
        polygons[index] = np.round(xy, 2).tolist()
    return polygons


def geojson_features(instances: np.ndarray, cells: list[Cell], image_name: str,
                     object_type: str = "cell") -> dict:
    """A GeoJSON FeatureCollection in the form QuPath (0.4+) imports: one feature per cell.

    Each feature has a polygon ``geometry`` (for ``"cell"`` objects also the same ``nucleusGeometry``: the
    model segments nuclei), ``properties.objectType``, ``properties.classification`` (name and RGB colour)
    and ``properties.measurements`` with the instance id, area, centroid and class probability. Feature
    ids are UUIDs derived from ``image_name`` and the instance id, so they are stable across runs.
    """
    if object_type not in OBJECT_TYPES:
        raise ValueError(f"object_type must be one of {OBJECT_TYPES}, got {object_type!r}")
    polygons = instance_polygons(instances)
    features = []
    for cell in cells:
        geometry = {"type": "Polygon", "coordinates": [polygons[cell.id]]}
        feature: dict = {"type": "Feature", "id": str(uuid.uuid5(_NAMESPACE, f"{image_name}/{cell.id}")),
                         "geometry": geometry}
        if object_type == "cell":
            feature["nucleusGeometry"] = geometry
        feature["properties"] = {
            "objectType": object_type,
            "name": str(cell.id),
            "classification": {"name": cell.class_name, "color": list(class_color(cell.class_id))},
            "measurements": {"Instance id": cell.id, "Area px": cell.area, "Centroid y px": cell.centroid_y,
                             "Centroid x px": cell.centroid_x, "Class probability": cell.probability},
        }
        features.append(feature)
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: Path, instances: np.ndarray, cells: list[Cell], image_name: str,
                  object_type: str = "cell") -> None:
    """Write :func:`geojson_features` to ``path``."""
    path.write_text(json.dumps(geojson_features(instances, cells, image_name, object_type)))


def overlay(image: np.ndarray, instances: np.ndarray, cells: list[Cell]) -> np.ndarray:
    """The image with every instance's inner boundary painted in its class colour, (H, W, 3) uint8."""
    lut = np.zeros((int(instances.max()) + 1, 3), np.uint8)
    for cell in cells:
        lut[cell.id] = class_color(cell.class_id)
    out = np.array(image, np.uint8, copy=True)
    edge = find_boundaries(instances, mode="inner") & (instances > 0)
    out[edge] = lut[instances[edge]]
    return out


def write_overlay(path: Path, image: np.ndarray, instances: np.ndarray, cells: list[Cell]) -> None:
    """Write :func:`overlay` as a PNG."""
    Image.fromarray(overlay(image, instances, cells)).save(path)
