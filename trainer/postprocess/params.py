"""Constants of the post-processing: the variants, per-dataset minimum sizes and :class:`PostprocessParams`."""

from __future__ import annotations

from dataclasses import dataclass

from embedstore.errors import EmbedstoreError
from embedstore.imaging.scale import parse_magnification

VARIANTS = ("cisca", "improved", "nocut")

# Released per-dataset minimum sizes T (pixels) from the reference evaluations.
_DATASET_MIN_SIZE = {"pannuke": {40.0: 50}, "conic": {20.0: 26}, "cytodark0": {20.0: 20, 40.0: 80},
                     "nuclei": {40.0: 50, 20.0: 26}}


def default_min_size(dataset_name: str | None, magnification: str | float) -> int:
    """Minimum instance area T in pixels for a dataset at a magnification.

    The released CISCA evaluations used PanNuke 50 (40x), CoNIC 26 (20x) and CytoDArk0 20 (20x) /
    80 (40x). CytoDArk0 holds whole neurons; every other dataset is taken to hold nuclei, so it uses the
    H&E values (50 at 40x, 26 at 20x) and scales PanNuke's 40x value with the pixel area elsewhere,
    ``round(50 * (m / 40) ** 2)``: 3 at 10x. (Scaling the neuron value gave 80 px at 40x, which drops
    many CoNSeP and MoNuSeg nuclei.)
    """
    mag = parse_magnification(magnification)
    known = _DATASET_MIN_SIZE.get((dataset_name or "").lower(), _DATASET_MIN_SIZE["nuclei"])
    if mag in known:
        return known[mag]
    reference_mag, reference_size = (20.0, 20) if (dataset_name or "").lower() == "cytodark0" else (40.0, 50)
    return max(1, round(reference_size * (mag / reference_mag) ** 2))


@dataclass(frozen=True)
class PostprocessParams:
    """Constants of the post-processing; build them with :meth:`for_dataset`.

    The field defaults are the reference's 40x constants. ``for_dataset`` switches to its 20x set
    (``struct_radius`` 3, ``erosion_radius`` 1, ``min_marker_size`` 2, cross-shaped opening) below
    30x.

    Attributes
    ----------
    threshold : float
        Contour-evidence threshold on the direction-map gradients (0.57).
    min_size : int
        T: instances and 4-connected foreground blobs with fewer pixels are removed; body pieces
        below ``min_size // 4`` pixels seed nothing.
    struct_radius : int
        Side of the square that widens the contour skeleton where it cuts the body map.
    erosion_radius : int
        Disk radius of the seed erosion (``cisca``, ``nocut``; 0 keeps the body map as seeds).
    min_marker_size : int
        Seed groups with fewer pixels give no marker (``cisca``, ``nocut``).
    opening : str
        Footprint of the mask opening, ``"square"`` (3x3) or ``"cross"`` (``cisca``, ``nocut``).
    distmap_weight : float
        Weight of the blurred contour-free foreground in the watershed relief (0.5).
    variant : str
        One of :data:`VARIANTS`; see :func:`instances_from_maps`.
    """

    threshold: float = 0.57
    min_size: int = 80
    struct_radius: int = 5
    erosion_radius: int = 2
    min_marker_size: int = 3
    opening: str = "square"
    distmap_weight: float = 0.5
    variant: str = "cisca"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise EmbedstoreError(f"post-processing variant {self.variant!r} is not one of {VARIANTS}")
        if self.opening not in ("square", "cross"):
            raise EmbedstoreError(f"post-processing opening {self.opening!r} must be 'square' or 'cross'")
        if not 0.0 < self.threshold < 1.0:
            raise EmbedstoreError(f"post-processing threshold {self.threshold} must lie in (0, 1)")
        if not 0.0 <= self.distmap_weight <= 1.0:
            raise EmbedstoreError(f"post-processing distmap_weight {self.distmap_weight} must lie in [0, 1]")
        for name in ("min_size", "struct_radius", "erosion_radius", "min_marker_size"):
            if getattr(self, name) < 0:
                raise EmbedstoreError(f"post-processing {name} {getattr(self, name)} must not be negative")

    @classmethod
    def for_dataset(cls, magnification: str | float, min_size: int | None = None,
                    variant: str = "cisca", dataset_name: str | None = None) -> PostprocessParams:
        """Reference constants for a magnification (>= 30x: the 40x set, otherwise the 20x set).

        ``min_size`` defaults to :func:`default_min_size` of ``dataset_name`` at that magnification.
        """
        mag = parse_magnification(magnification)
        if min_size is None:
            min_size = default_min_size(dataset_name, mag)
        if mag >= 30:
            return cls(min_size=min_size, variant=variant)
        return cls(min_size=min_size, struct_radius=3, erosion_radius=1, min_marker_size=2,
                   opening="cross", variant=variant)
