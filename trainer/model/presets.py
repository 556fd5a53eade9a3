"""Decoder width presets (``--decoder``): plain dataclasses, importable without torch (the CLI lists them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DecoderPreset = Literal["lite", "cisca"]
"""Names of the width presets in :data:`PRESETS`."""


@dataclass(frozen=True)
class DecoderWidths:
    """Channel widths of a decoder (one set per preset, overridable).

    Attributes
    ----------
    scale : widths of the decoder feature maps at strides 1, 2, 4, 8, 16, 32.
    stem : widths of the RGB stem at strides 1 and 2.
    features : width of the full-resolution features shared by the contour and direction heads.
    type_features : width of the separate full-resolution features of the type head.
    heads : residual-block widths of the (contour, directions, types) heads.
    head_blocks : residual blocks per head.
    stage_convs : 3x3 convolutions per decoder stage and stem level.
    step_convs : 3x3 convolutions after each x2 step of a level branch (CellViT's Deconv2DBlock has 1).
    """

    scale: tuple[int, int, int, int, int, int]
    stem: tuple[int, int]
    features: int
    type_features: int
    heads: tuple[int, int, int]
    head_blocks: int
    stage_convs: int
    step_convs: int


PRESETS: dict[DecoderPreset, DecoderWidths] = {
    # Fast on CPUs: 16-32 channels at strides 1-2 still resolve the +1/-1 jumps of the direction maps.
    "lite": DecoderWidths(
        scale=(16, 32, 48, 64, 128, 128),
        stem=(16, 32),
        features=16,
        type_features=16,
        heads=(16, 16, 16),
        head_blocks=1,
        stage_convs=1,
        step_convs=0,
    ),
    # CISCA's U-Net decoder widths (64/128/256/512 by stride), 256-wide features, head residual blocks
    # contour 32, directions 4, types 32 (two each) and a separate 256-wide type trunk.
    "cisca": DecoderWidths(
        scale=(64, 64, 128, 256, 512, 512),
        stem=(64, 128),
        features=256,
        type_features=256,
        heads=(32, 4, 32),
        head_blocks=2,
        stage_convs=2,
        step_convs=1,
    ),
}
