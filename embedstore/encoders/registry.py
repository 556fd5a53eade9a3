"""The encoder registry: a table of ``EncoderSpec`` rows, plus specs built on the fly for ``timm:<name>``.

Choices recorded here (see docs/encoders.md):

- ViTs tap four evenly spaced blocks (0-based ``depth * k // 4 - 1``: 12 -> 2,5,8,11; 24 -> 5,11,17,23;
  32 -> 7,15,23,31; 40 -> 9,19,29,39), raw outputs without the final norm, prefix tokens dropped.
- Patch-14 ViTs resize a 256 tile to 252 (18 x 18 tokens, the CellViT++ choice for Virchow), keeping
  almost all pixels instead of shrinking to 224; patch-16 ViTs (UNI, GigaPath) take 256 as is (16 x 16).
  ViTs are built with ``dynamic_img_size=True`` and their published ``img_size`` so hub weights load
  unchanged; position embeddings are interpolated to the grid at each forward.
- SwinV2-B 22k (pretrained at 192 px, window 12) runs at 256 px with window 16 and
  ``pretrained_window_sizes=(12, 12, 12, 6)``, exactly the transfer timm's official
  ``swinv2_base_window12to16_192to256`` fine-tune uses (continuous log-spaced relative positions make
  window changes weight-compatible); windows then tile the 64/32/16 px stage grids without padding, and
  the 8 x 8 last stage is one window. ``strict_img_size=False`` lets other tile sizes run (padded windows).
- The R50+ViT-B hybrid taps ResNet stage 0 (stride 4, 256 ch) and stage 1 (stride 8, 512 ch), then ViT
  blocks 5 and 11 (stride 16, 768 ch): the two CNN maps carry the fine detail a stride-16 ViT lacks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import timm
import torch

from embedstore.encoders.levels import take_levels
from embedstore.encoders.spec import EncoderSpec, create_network
from embedstore.errors import EmbedstoreError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
TILE = 256
TIMM_PREFIX = "timm:"


def vit_levels(depth: int) -> tuple[int, int, int, int]:
    """Four evenly spaced 0-based block indices ending at the last block (24 -> (5, 11, 17, 23))."""
    return tuple(depth * k // 4 - 1 for k in range(1, 5))  # type: ignore[return-value]


def _vit(key: str, source: str, architecture: str, *, depth: int, dim: int, patch: int, prefix: int,
         kwargs: dict[str, Any], mean: tuple[float, float, float] = IMAGENET_MEAN,
         std: tuple[float, float, float] = IMAGENET_STD, licence: str, gated: bool = False,
         note: str = "") -> EncoderSpec:
    """A ViT row: four evenly spaced blocks, input resized to a multiple of the patch when needed."""
    side = (TILE // patch) * patch
    grid = side // patch
    return EncoderSpec(
        key=key, source=source, architecture=architecture, family="vit", levels=vit_levels(depth),
        prefix_tokens=prefix, mean=mean, std=std, patch_size=patch, input_size=side,
        resize="none" if side == TILE else "resize", dims=(dim,) * 4, grids=(grid,) * 4,  # type: ignore[arg-type]
        model_kwargs=tuple({"dynamic_img_size": True, **kwargs}.items()), licence=licence, gated=gated,
        note=note,
    )


_SWIGLU = {"mlp_layer": "timm.layers.SwiGLUPacked", "act_layer": "torch.nn.SiLU"}
_GATED_HINT = "gated: accept the licence on the Hugging Face model page, then log in"

_SPECS: tuple[EncoderSpec, ...] = (
    _vit("uni", "hf-hub:MahmoodLab/UNI", "vit_large_patch16_224", depth=24, dim=1024, patch=16, prefix=1,
         kwargs={"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0},
         licence="CC-BY-NC-ND-4.0", gated=True, note=f"UNI ViT-L/16 (Mass-100K, DINOv2); {_GATED_HINT}"),
    _vit("uni2-h", "hf-hub:MahmoodLab/UNI2-h", "vit_giant_patch14_224", depth=24, dim=1536, patch=14, prefix=9,
         kwargs={"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5,
                 "embed_dim": 1536, "mlp_ratio": 2.66667 * 2, "num_classes": 0, "no_embed_class": True,
                 "reg_tokens": 8, **_SWIGLU},
         licence="CC-BY-NC-ND-4.0", gated=True, note=f"UNI2-h ViT-H/14, SwiGLU, 8 registers; {_GATED_HINT}"),
    _vit("virchow2", "hf-hub:paige-ai/Virchow2", "vit_huge_patch14_224", depth=32, dim=1280, patch=14,
         prefix=5,
         kwargs={"img_size": 224, "init_values": 1e-5, "num_classes": 0, "mlp_ratio": 5.3375,
                 "reg_tokens": 4, "global_pool": "", **_SWIGLU},
         licence="CC-BY-NC-ND-4.0", gated=True, note=f"Virchow2 ViT-H/14, SwiGLU, 4 registers; {_GATED_HINT}"),
    _vit("gigapath", "hf-hub:prov-gigapath/prov-gigapath", "vit_giant_patch14_dinov2", depth=40, dim=1536,
         patch=16, prefix=1,
         kwargs={"img_size": 224, "patch_size": 16, "embed_dim": 1536, "depth": 40, "num_heads": 24,
                 "init_values": 1e-5, "mlp_ratio": 5.33334, "num_classes": 0},
         licence="Apache-2.0 (research use per model page)", gated=True,
         note=f"Prov-GigaPath tile encoder, ViT-g with patch 16 despite the architecture name; {_GATED_HINT}"),
    _vit("dinov2-l", "vit_large_patch14_dinov2.lvd142m", "vit_large_patch14_dinov2", depth=24, dim=1024,
         patch=14, prefix=1, kwargs={}, licence="apache-2.0", note="DINOv2 ViT-L/14, LVD-142M"),
    _vit("dinov2-l-reg4", "vit_large_patch14_reg4_dinov2.lvd142m", "vit_large_patch14_reg4_dinov2", depth=24,
         dim=1024, patch=14, prefix=5, kwargs={}, licence="apache-2.0",
         note="DINOv2 ViT-L/14 with 4 registers, LVD-142M"),
    _vit("vit-b-22k", "vit_base_patch16_224.augreg_in21k", "vit_base_patch16_224", depth=12, dim=768, patch=16,
         prefix=1, kwargs={}, mean=INCEPTION_MEAN, std=INCEPTION_STD, licence="apache-2.0",
         note="ViT-B/16 AugReg, ImageNet-21k"),
    EncoderSpec(
        key="convnext-b-22k", source="convnext_base.fb_in22k", architecture="convnext_base", family="cnn",
        levels=(0, 1, 2, 3), prefix_tokens=0, mean=IMAGENET_MEAN, std=IMAGENET_STD, patch_size=None,
        input_size=TILE, resize="none", dims=(128, 256, 512, 1024), grids=(64, 32, 16, 8),
        licence="apache-2.0", note="ConvNeXt-B, ImageNet-22k; the four stages (strides 4/8/16/32)",
    ),
    EncoderSpec(
        key="swinv2-b-22k", source="swinv2_base_window12_192.ms_in22k", architecture="swinv2_base_window12_192",
        family="swin", levels=(0, 1, 2, 3), prefix_tokens=0, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        patch_size=None, input_size=TILE, resize="none", dims=(128, 256, 512, 1024), grids=(64, 32, 16, 8),
        model_kwargs=(("img_size", TILE), ("window_size", 16), ("pretrained_window_sizes", (12, 12, 12, 6)),
                      ("strict_img_size", False)),
        licence="mit",
        note="SwinV2-B, ImageNet-22k (192 px, window 12) run at 256 px with window 16; stages at strides 4-32",
    ),
    EncoderSpec(
        key="vit-r50-hybrid", source="vit_base_r50_s16_224.orig_in21k", architecture="vit_base_r50_s16_224",
        family="hybrid", levels=(0, 1, 5, 11), prefix_tokens=1, mean=INCEPTION_MEAN, std=INCEPTION_STD,
        patch_size=16, input_size=TILE, resize="none", dims=(256, 512, 768, 768), grids=(64, 32, 16, 16),
        model_kwargs=(("dynamic_img_size", True),), licence="apache-2.0",
        note="R50+ViT-B/16, ImageNet-21k; levels = ResNet stages 0, 1 (strides 4, 8) + ViT blocks 5, 11 (stride 16)",
    ),
    _vit("tiny-vit", "random", "vit_tiny_patch16_224", depth=4, dim=64, patch=16, prefix=1,
         kwargs={"img_size": TILE, "embed_dim": 64, "depth": 4, "num_heads": 2, "num_classes": 0},
         licence="n/a (random weights only)", note="4-block ViT/16 for tests and the demo"),
    EncoderSpec(
        key="tiny-cnn", source="random", architecture="resnet10t", family="cnn", levels=(1, 2, 3, 4),
        prefix_tokens=0, mean=IMAGENET_MEAN, std=IMAGENET_STD, patch_size=None, input_size=TILE, resize="none",
        dims=(16, 32, 64, 128), grids=(64, 32, 16, 8),
        model_kwargs=(("channels", (16, 32, 64, 128)), ("stem_width", 16), ("num_classes", 0)),
        licence="n/a (random weights only)", note="ResNet-10-T at 1/4 width for tests and the demo",
    ),
)
_REGISTRY: dict[str, EncoderSpec] = {spec.key: spec for spec in _SPECS}


def list_specs() -> list[EncoderSpec]:
    """The registered encoders, in table order (``timm:<name>`` specs are made on demand, not listed)."""
    return list(_SPECS)


def get_spec(name: str) -> EncoderSpec:
    """Look up a registered encoder, or build a spec for ``timm:<timm model name>``.

    Raises
    ------
    EmbedstoreError
        If ``name`` is neither registered nor a usable ``timm:`` model; the message lists the valid names.
    """
    if name.startswith(TIMM_PREFIX):
        return timm_spec(name[len(TIMM_PREFIX):])
    if name not in _REGISTRY:
        raise EmbedstoreError(
            f"unknown encoder {name!r}; choose one of {', '.join(_REGISTRY)} or 'timm:<timm model name>'"
        )
    return _REGISTRY[name]


def _family(model: torch.nn.Module) -> str:
    """Classify a timm network by how its levels are tapped."""
    if hasattr(model, "blocks") and hasattr(model, "num_prefix_tokens"):
        return "hybrid" if isinstance(model.patch_embed, timm.layers.HybridEmbed) else "vit"
    return "swin" if "swin" in type(model).__name__.lower() else "cnn"


def measure_levels(spec: EncoderSpec, tile_size: int = TILE) -> list[tuple[int, int, int]]:
    """(C, h, w) per level from a forward pass on the meta device: no weights allocated, no compute."""
    with torch.device("meta"):
        model = create_network(spec)
        side = spec.input_side(tile_size)
        out = take_levels(model, spec, torch.empty(1, 3, side, side))
    return [(t.shape[1], t.shape[2], t.shape[3]) for t in out]


def timm_spec(name: str) -> EncoderSpec:
    """Spec for any timm model with ``forward_intermediates``: family detected, levels evenly spaced.

    ViTs get four evenly spaced blocks and ``dynamic_img_size``; CNNs and Swins their four deepest
    feature stages; a hybrid its first two backbone stages and two blocks (middle, last). Mean/std and
    licence come from the timm pretrained config; dims and grids are measured on the meta device.
    """
    if not timm.is_model(name):
        raise EmbedstoreError(f"unknown timm model {name!r} in encoder 'timm:{name}'; see timm.list_models()")
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    if not hasattr(model, "forward_intermediates"):
        raise EmbedstoreError(f"timm model {name!r} has no forward_intermediates; it cannot give feature levels")
    family = _family(model)
    patch_size = None
    kwargs: dict[str, Any] = {}
    if family in ("vit", "hybrid"):
        kwargs["dynamic_img_size"] = True
    if family == "vit":
        patch_size = model.patch_embed.patch_size[0]
        levels = vit_levels(len(model.blocks))
    elif family == "hybrid":
        patch_size = TILE // model.patch_embed.dynamic_feat_size((TILE, TILE))[0]
        levels = (0, 1, len(model.blocks) // 2 - 1, len(model.blocks) - 1)
    else:
        n = len(model.feature_info)
        if n < 4:
            raise EmbedstoreError(f"timm model {name!r} has {n} feature stages; 4 are needed")
        levels = (n - 4, n - 3, n - 2, n - 1)
        if family == "swin":
            kwargs.update(img_size=TILE, strict_img_size=False)
    cfg = model.pretrained_cfg
    side = (TILE // patch_size) * patch_size if family == "vit" else TILE
    draft = EncoderSpec(
        key=f"{TIMM_PREFIX}{name}", source=name, architecture=name.split(".")[0], family=family, levels=levels,
        prefix_tokens=getattr(model, "num_prefix_tokens", 0), mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_STD)), patch_size=patch_size, input_size=side,
        resize="none" if side == TILE else "resize", dims=(0, 0, 0, 0), grids=(0, 0, 0, 0),
        model_kwargs=tuple(kwargs.items()), licence=str(cfg.get("license", "unknown")), gated=False,
        note="built on the fly from the timm model",
    )
    shapes = measure_levels(draft)
    return dataclasses.replace(draft, dims=tuple(c for c, _, _ in shapes), grids=tuple(h for _, h, _ in shapes))
