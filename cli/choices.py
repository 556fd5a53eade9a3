"""The option choices of `embed` that name library values, spelled once for every command.

They are written out here (not imported from the library) so that `embed --help` does not import
scipy and scikit-image (about 0.4 s per start); tests/cli/test_choices.py keeps each equal to the
library table it mirrors, and the library refuses any other value too.
"""

from __future__ import annotations

import enum


class Postprocess(enum.StrEnum):
    """``--postprocess``: ``embedstore.trainer.postprocess.VARIANTS``."""

    cisca = "cisca"
    improved = "improved"
    nocut = "nocut"


class ObjectType(enum.StrEnum):
    """``--object-type``: ``embedstore.trainer.predict.export.OBJECT_TYPES``."""

    cell = "cell"
    detection = "detection"


class BlendWindow(enum.StrEnum):
    """``--window``: ``embedstore.imaging.tiling.WINDOWS``."""

    uniform = "uniform"
    spline = "spline"


class Level(enum.StrEnum):
    """``embed compare --level``: ``embedstore.trainer.compare.LEVELS``."""

    auto = "auto"
    tile = "tile"
    image = "image"


class Quantize(enum.StrEnum):
    """``embed extract --quantize``: ``embedstore.store.features.QUANTIZE``."""

    none = "none"
    int8 = "int8"
