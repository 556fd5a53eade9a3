"""One row of the encoder registry: everything needed to rebuild an encoder and read its token grids.

A spec is plain data (frozen, hashable, JSON-able through ``to_dict``) so that it can be written into a
store's attributes and compared later. Callables that timm needs as keyword arguments (the SwiGLU MLP
and SiLU activation of Virchow2 / UNI2-h) are stored by name, e.g. ``("mlp_layer",
"timm.layers.SwiGLUPacked")``, and resolved from a fixed table when the network is built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import timm
import torch

#: Callables that may appear by name in ``EncoderSpec.model_kwargs``; names resolve only through this table.
CALLABLES: dict[str, Any] = {
    "timm.layers.SwiGLUPacked": timm.layers.SwiGLUPacked,
    "torch.nn.SiLU": torch.nn.SiLU,
}

FAMILIES = ("vit", "cnn", "swin", "hybrid")
RESIZE_POLICIES = ("none", "resize")


@dataclass(frozen=True)
class EncoderSpec:
    """Declarative description of a frozen encoder and the four feature levels taken from it.

    Attributes
    ----------
    key : registry name (``"uni"``, ``"convnext-b-22k"``, ``"timm:resnet18"`` ...).
    source : where pretrained weights come from: ``"hf-hub:<repo>"``, a timm pretrained name
        (``"convnext_base.fb_in22k"``) or ``"random"`` for encoders without published weights.
    architecture : timm architecture built with ``pretrained=False`` and ``model_kwargs``.
    family : ``"vit"`` | ``"cnn"`` | ``"swin"`` | ``"hybrid"``; decides how the levels are tapped.
    levels : four indices. ViT: 0-based blocks. CNN: indices of timm's ``forward_intermediates`` features
        (= ``feature_info`` entries, e.g. 1..4 for a ResNet whose entry 0 is the stride-2 stem). Swin:
        stages. Hybrid: two stages of the CNN backbone, then two ViT blocks.
    prefix_tokens : CLS + register tokens dropped before reshaping tokens to a grid.
    mean, std : per-channel normalisation of images scaled to [0, 1].
    patch_size : ViT patch side in pixels; None for CNN / Swin.
    input_size : side fed to the network for a 256 x 256 tile (see ``input_side``).
    resize : ``"none"`` (fed as is) or ``"resize"`` (bicubic, antialiased, to the largest multiple of
        ``patch_size`` not above the tile side: 256 -> 252 for patch 14).
    dims, grids : channels and grid side per level for a 256 x 256 tile.
    model_kwargs : extra ``timm.create_model`` keyword arguments as ``(name, value)`` pairs; string values
        that are keys of ``CALLABLES`` are resolved to those callables at build time.
    licence, gated, note : weights licence, whether the hub repo needs an accepted licence, free text.
    """

    key: str
    source: str
    architecture: str
    family: str
    levels: tuple[int, int, int, int]
    prefix_tokens: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    patch_size: int | None
    input_size: int
    resize: str
    dims: tuple[int, int, int, int]
    grids: tuple[int, int, int, int]
    model_kwargs: tuple[tuple[str, Any], ...] = ()
    licence: str = ""
    gated: bool = False
    note: str = ""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"encoder {self.key!r}: family must be one of {FAMILIES}, got {self.family!r}")
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"encoder {self.key!r}: resize must be one of {RESIZE_POLICIES}, got {self.resize!r}")
        if self.resize == "resize" and self.patch_size is None:
            raise ValueError(f"encoder {self.key!r}: the 'resize' policy needs a patch_size")
        if not len(self.levels) == len(self.dims) == len(self.grids) == 4:
            raise ValueError(f"encoder {self.key!r}: levels, dims and grids must each have 4 entries")
        if self.family != "hybrid" and list(self.levels) != sorted(set(self.levels)):
            raise ValueError(f"encoder {self.key!r}: levels must be increasing, got {self.levels}")

    def input_side(self, tile_size: int) -> int:
        """Side (pixels) of the network input for a square tile of ``tile_size`` pixels."""
        if self.resize == "resize":
            assert self.patch_size is not None  # guaranteed by __post_init__
            return (tile_size // self.patch_size) * self.patch_size
        return tile_size

    def timm_kwargs(self) -> dict[str, Any]:
        """``model_kwargs`` as a dict for ``timm.create_model``, with callable names resolved."""
        return {k: CALLABLES.get(v, v) if isinstance(v, str) else v for k, v in self.model_kwargs}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists, ``model_kwargs`` a dict) for store attributes."""
        out = dataclasses.asdict(self)
        out["model_kwargs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.model_kwargs}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderSpec:
        """Inverse of ``to_dict``: rebuild a spec read back from store attributes."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields}
        values["model_kwargs"] = tuple(
            (k, tuple(v) if isinstance(v, list) else v) for k, v in data.get("model_kwargs", {}).items()
        )
        return cls(**values)


def create_network(spec: EncoderSpec) -> torch.nn.Module:
    """Build the spec's full timm network with random weights (on the current default device).

    Call it under ``torch.device("meta")`` to get shapes without allocating memory.
    """
    return timm.create_model(spec.architecture, pretrained=False, **spec.timm_kwargs())
