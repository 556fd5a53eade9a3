"""Decoder from cached multi-level token grids plus the tile's RGB to CISCA's three heads.

The encoder is frozen and cached, so the decoder is all that trains. It follows UNETR/CellViT: every used
level gets a 1x1 projection, is brought to a planned scale of the tile (shallower levels to finer scales,
by learned x2 transposed-convolution steps), and a coarse-to-fine path upsamples x2 per stage, fusing the
levels and a light full-resolution RGB stem (strides 1 and 2) as skips. Three heads read the full-resolution
features: 3-class contour logits (boundary / body / background), 4 linear direction maps (h, v, tl, bl),
and n_types + 1 cell-type logits (absent when ``n_types == 0``).

No-encoder baseline. ``levels=()`` builds the same decoder without level branches: the path starts at
the stem's stride 2, so the maps come from the RGB tile alone. It is the floor an encoder must beat.

Scale plan (``level_scales``). A level's native stride is ``tile_size / grid``, rounded to the nearest
power of two (ViT-14 at 252 px: 18x18 grid, stride 14.2 -> 16). Grids that are not exactly
``S / stride`` (18x18 for a 256 tile) are resized bilinearly to the rounded grid before anything else.
The deepest used level stays at its native stride; each shallower used level goes to half the stride of
the next deeper one, or its native stride when that is already finer, never finer than stride 2. So ViT
levels (16, 16, 16, 16) land at strides (2, 4, 8, 16), and CNN/Swin stages (4, 8, 16, 32) stay where they
are. Levels that land on the same stride are concatenated.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from embedstore.errors import EmbedstoreError
from embedstore.trainer.model.presets import PRESETS, DecoderWidths

STRIDES = (1, 2, 4, 8, 16, 32)
"""Strides the decoder has widths for; index i of ``DecoderWidths.scale`` is stride ``2**i``."""
STEM_STRIDE = 2
"""Coarsest stride of the RGB stem: where the path starts when the decoder reads no levels."""


@dataclass(frozen=True)
class DecoderConfig:
    """Everything needed to rebuild a decoder (stored with checkpoints via ``to_dict``).

    Attributes
    ----------
    preset : "lite" or "cisca"; picks ``widths`` when they are not given.
    level_dims : channels of the 4 cached levels (store attrs).
    level_grids : side h (= w) of each level's grid for a ``tile_size`` tile.
    n_types : number of cell classes; 0 builds no type head.
    tile_size : tile side S in pixels.
    levels : ascending subset of levels the decoder reads (the loader reads only these); ``()`` reads
        none (the RGB-only baseline).
    widths : channel widths; ``None`` takes ``PRESETS[preset]``.
    """

    preset: str
    level_dims: tuple[int, int, int, int]
    level_grids: tuple[int, int, int, int]
    n_types: int
    tile_size: int = 256
    levels: tuple[int, ...] = (0, 1, 2, 3)
    widths: DecoderWidths | None = field(default=None)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise EmbedstoreError(f"decoder preset {self.preset!r} is unknown; choose one of {sorted(PRESETS)}")
        for name in ("level_dims", "level_grids", "levels"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if len(self.level_dims) != 4 or len(self.level_grids) != 4:
            raise EmbedstoreError(
                f"level_dims {self.level_dims} and level_grids {self.level_grids} must each list 4 levels"
            )
        if list(self.levels) != sorted(set(self.levels)) or not set(self.levels) <= {0, 1, 2, 3}:
            raise EmbedstoreError(f"levels {self.levels} must be an ascending subset of 0..3 (empty: none)")
        if self.n_types < 0:
            raise EmbedstoreError(f"n_types must be >= 0, got {self.n_types}")
        if self.widths is None:
            object.__setattr__(self, "widths", PRESETS[self.preset])
        elif isinstance(self.widths, dict):
            object.__setattr__(self, "widths", _widths_from_dict(self.widths))
        level_scales(self)  # validates grids against the tile size

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of builtins, JSON-ready (``from_dict`` accepts lists back for the tuples)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecoderConfig:
        """Inverse of ``to_dict``."""
        return cls(**data)


def _widths_from_dict(data: dict[str, Any]) -> DecoderWidths:
    return DecoderWidths(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def level_scales(cfg: DecoderConfig) -> list[tuple[int, int]]:
    """(native, target) stride of each used level, in the order of ``cfg.levels``.

    Native = ``tile_size / grid`` rounded to a power of two; target as in the module docstring.
    """
    native = []
    for k in cfg.levels:
        grid = cfg.level_grids[k]
        if grid <= 0:
            raise EmbedstoreError(f"level_grids[{k}] = {grid} must be positive")
        stride = 2 ** round(math.log2(cfg.tile_size / grid))
        if stride not in STRIDES[1:]:
            raise EmbedstoreError(
                f"level {k}: grid {grid} on a {cfg.tile_size} px tile is stride {cfg.tile_size / grid:.1f}; "
                f"the decoder supports strides 2..32"
            )
        if cfg.tile_size % stride:
            raise EmbedstoreError(f"tile_size {cfg.tile_size} is not a multiple of level {k}'s stride {stride}")
        native.append(stride)
    target = list(native)
    for i in range(len(target) - 2, -1, -1):
        target[i] = max(2, min(native[i], target[i + 1] // 2))
    return list(zip(native, target))


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm: batch-size independent (batches of 4 are usual) and identical in train and eval.
    return nn.GroupNorm(math.gcd(8, channels), channels)


def _conv_norm_act(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), _norm(c_out), nn.ReLU(inplace=True)
    )


def _convs(c_in: int, c_out: int, n: int, stride: int = 1) -> nn.Sequential:
    """``n`` conv-norm-ReLU blocks, the first one strided."""
    return nn.Sequential(*[_conv_norm_act(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1) for i in range(n)])


def _up(c_in: int, c_out: int) -> nn.Sequential:
    """Learned x2 upsampling with norm and ReLU.

    A transposed conv k2 s2 (UNETR/CellViT) written as a 1x1 conv to 4 x c_out channels + pixel shuffle:
    the same function, but it runs on the fast convolution path on CPUs.
    """
    return nn.Sequential(
        nn.Conv2d(c_in, 4 * c_out, 1, bias=False), nn.PixelShuffle(2), _norm(c_out), nn.ReLU(inplace=True)
    )


class _LevelBranch(nn.Module):
    """One cached level: 1x1 projection, resize to the planned grid, x2 steps to its target stride."""

    def __init__(self, c_in: int, native: int, target: int, widths: DecoderWidths) -> None:
        super().__init__()
        w = widths.scale
        self.native = native
        c = w[STRIDES.index(native)]
        self.project = nn.Sequential(nn.Conv2d(c_in, c, 1, bias=False), _norm(c), nn.ReLU(inplace=True))
        steps = []
        stride = native
        while stride > target:
            c_next = w[STRIDES.index(stride // 2)]
            steps.append(nn.Sequential(_up(c, c_next), *_convs(c_next, c_next, widths.step_convs)))
            stride, c = stride // 2, c_next
        self.steps = nn.Sequential(*steps)
        self.out_channels = c

    def forward(self, x: torch.Tensor, tile_size: int) -> torch.Tensor:
        x = self.project(x)
        side = tile_size // self.native
        if x.shape[-2:] != (side, side):
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        return self.steps(x)


class _ResBlock(nn.Module):
    """CISCA/csbdeep head block: conv3x3-ReLU-conv3x3, add the (1x1-projected) input, ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c_out, c_out, 3, padding=1)
        )
        self.shortcut = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


def _head(c_in: int, width: int, blocks: int, c_out: int) -> nn.Sequential:
    layers: list[nn.Module] = [_ResBlock(c_in if i == 0 else width, width) for i in range(blocks)]
    return nn.Sequential(*layers, nn.Conv2d(width, c_out, 1))


class CellDecoder(nn.Module):
    """Levels + RGB tile -> contour, direction and type maps at tile resolution (see module docstring)."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        assert w is not None
        scales = level_scales(cfg)
        self.targets = [t for _, t in scales]
        self.branches = nn.ModuleList(
            _LevelBranch(cfg.level_dims[k], native, target, w) for k, (native, target) in zip(cfg.levels, scales)
        )
        self.stem = nn.ModuleList(
            [_convs(3, w.stem[0], w.stage_convs), _convs(w.stem[0], w.stem[1], w.stage_convs, stride=2)]
        )

        coarsest = max(self.targets, default=STEM_STRIDE)
        self.path_strides = [s for s in STRIDES if s <= coarsest][::-1]  # coarse to fine, ends at 1
        stages, ups = {}, {}
        for s in self.path_strides:
            c_out = w.scale[STRIDES.index(s)]
            c_in = sum(b.out_channels for b, t in zip(self.branches, self.targets) if t == s)
            if s < coarsest:
                c_in += c_out
                ups[str(s)] = _up(w.scale[STRIDES.index(2 * s)], c_out)
            if s <= 2:
                c_in += w.stem[STRIDES.index(s)]
            stages[str(s)] = _convs(c_in, c_out, w.stage_convs)
        self.stages = nn.ModuleDict(stages)
        self.ups = nn.ModuleDict(ups)

        c_full = w.scale[0]
        self.features = nn.Sequential(nn.Conv2d(c_full, w.features, 3, padding=1), nn.ReLU(inplace=True))
        self.contour = _head(w.features, w.heads[0], w.head_blocks, 3)
        self.directions = _head(w.features, w.heads[1], w.head_blocks, 4)
        if cfg.n_types > 0:
            self.type_features = nn.Sequential(nn.Conv2d(c_full, w.type_features, 3, padding=1), nn.ReLU(inplace=True))
            self.types = _head(w.type_features, w.heads[2], w.head_blocks, cfg.n_types + 1)

    def forward(self, levels: list[torch.Tensor], image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decode one batch.

        Parameters
        ----------
        levels : the used levels (``cfg.levels`` order), each (B, C_k, h_k, w_k), any float dtype.
        image : (B, 3, S, S) RGB in [0, 1]; S must be a multiple of the coarsest planned stride.

        Returns
        -------
        dict with float logits "contour" (B, 3, S, S), linear "directions" (B, 4, S, S) and, when
        ``n_types > 0``, "types" (B, n_types + 1, S, S).
        """
        dtype = self.features[0].weight.dtype
        size = self._check(levels, image)
        skips: dict[int, list[torch.Tensor]] = {}
        for branch, target, x in zip(self.branches, self.targets, levels):
            skips.setdefault(target, []).append(branch(x.to(dtype), size))
        full = self.stem[0](image.to(dtype))
        skips.setdefault(1, []).append(full)
        skips.setdefault(2, []).append(self.stem[1](full))

        x = None
        for s in self.path_strides:
            parts = skips.get(s, [])
            if x is not None:
                parts = [self.ups[str(s)](x), *parts]
            x = self.stages[str(s)](torch.cat(parts, dim=1))
        feats = self.features(x)
        out = {"contour": self.contour(feats), "directions": self.directions(feats)}
        if self.cfg.n_types > 0:
            out["types"] = self.types(self.type_features(x))
        return out

    def _check(self, levels: list[torch.Tensor], image: torch.Tensor) -> int:
        if len(levels) != len(self.cfg.levels):
            raise EmbedstoreError(
                f"decoder reads levels {self.cfg.levels} but got {len(levels)} level tensors"
            )
        for k, x in zip(self.cfg.levels, levels):
            if x.ndim != 4 or x.shape[1] != self.cfg.level_dims[k]:
                raise EmbedstoreError(
                    f"level {k} has shape {tuple(x.shape)}; the decoder expects (B, {self.cfg.level_dims[k]}, h, w) "
                    f"(level_dims from the store's feature attrs)"
                )
        size = image.shape[-1]
        multiple = max((b.native for b in self.branches), default=STEM_STRIDE)
        if image.ndim != 4 or image.shape[1] != 3 or image.shape[-2] != size or size % multiple:
            raise EmbedstoreError(
                f"image has shape {tuple(image.shape)}; expected (B, 3, S, S) with S a multiple of {multiple}"
            )
        return size


def build_decoder(cfg: DecoderConfig) -> CellDecoder:
    """Build the decoder described by ``cfg`` (seed torch beforehand for reproducible weights)."""
    return CellDecoder(cfg)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
