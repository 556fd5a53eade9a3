"""Take the four feature levels of a spec from its timm network, whatever the family.

ViT, CNN and Swin networks all expose timm's ``forward_intermediates``, which already drops prefix tokens
and returns NCHW grids (timm's Swin permutes its NHWC stages itself). The hybrid (ResNet stem + ViT)
is tapped at two backbone stages through forward hooks and at two ViT blocks through the same call.
``prune`` removes the blocks after the deepest level and the head, so they cost neither memory nor time.
"""

from __future__ import annotations

import torch

from embedstore.encoders.spec import EncoderSpec


def _vit_levels(spec: EncoderSpec) -> list[int]:
    """Levels handed to ``forward_intermediates`` (for the hybrid: its ViT blocks only)."""
    return list(spec.levels[2:] if spec.family == "hybrid" else spec.levels)


def prune(model: torch.nn.Module, spec: EncoderSpec) -> None:
    """Drop, in place, the blocks/stages after the deepest level, the final norm and the classifier."""
    model.prune_intermediate_layers(_vit_levels(spec), prune_norm=True, prune_head=True)


def take_levels(model: torch.nn.Module, spec: EncoderSpec, x: torch.Tensor) -> list[torch.Tensor]:
    """Run ``model`` on normalised images and return the spec's four levels.

    Parameters
    ----------
    model : the spec's timm network (pruned or not).
    x : (B, 3, H, W) float, already resized and normalised.

    Returns
    -------
    Four (B, C_k, h_k, w_k) tensors in the order of ``spec.levels``; raw block/stage outputs (no final norm).
    """
    if spec.family != "hybrid":
        return model.forward_intermediates(x, indices=_vit_levels(spec), intermediates_only=True, stop_early=True)
    stages = model.patch_embed.backbone.stages
    cnn: list[torch.Tensor] = []
    hooks = [stages[i].register_forward_hook(lambda _m, _in, out: cnn.append(out)) for i in spec.levels[:2]]
    try:
        vit = model.forward_intermediates(x, indices=_vit_levels(spec), intermediates_only=True, stop_early=True)
    finally:
        for hook in hooks:
            hook.remove()
    return cnn + vit
