"""CISCA's training loss (research notes cisca.md §3) and two cheap validation metrics.

The loss is a weighted sum of six terms over the decoder's logits: contour cross-entropy, soft Dice on
the boundary and on the body channel, cell-type cross-entropy plus element-wise Tversky (typed datasets
only), masked L1 on the direction maps, and a mean-squared gradient error (MSGE) on them. Everything is
computed in float32 whatever the outputs' dtype (softmax inside, logs clamped), so it is safe under
autocast.

MSGE maps. With four direction maps the reference takes the gradient term on ``tl`` and ``bl`` only
(``msge_maps="diagonals"``). The default here is ``"all"``: post-processing turns the 5x5 derivative of
*every* map into contour evidence, so supervising the derivatives of ``h`` and ``v`` too aligns the loss
with how the maps are used, at negligible cost. Use ``"diagonals"`` to reproduce the reference.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from embedstore.errors import EmbedstoreError
from embedstore.trainer.fit.options import LossWeights, MsgeMaps
from embedstore.imaging.gradients import gradient_kernels
from embedstore.trainer.targets.maps import BODY, BOUNDARY

EPS = 1e-8
"""Smoothing / clipping constant of the reference (probability clip, Tversky, weight normalisation)."""
TVERSKY_ALPHA = 0.7
"""Tversky weight on false negatives (0.3 on false positives)."""
OUTSIDE_PENALTY = 0.01
"""Weight of the L1 penalty on nonzero direction predictions far from cells."""
MAP_NAMES = ("h", "v", "tl", "bl")
MSGE_MAPS: dict[MsgeMaps, tuple[int, ...]] = {"all": (0, 1, 2, 3), "diagonals": (2, 3)}
"""Direction-map channels the gradient term covers, by ``msge_maps`` option."""


@functools.cache
def direction_kernels(maps: tuple[int, ...] = (0, 1, 2, 3)) -> Tensor:
    """5x5 derivative kernels of the given direction-map channels, (len(maps), 1, 5, 5) float32.

    ``K_h[dy, dx] = dx / (dx^2 + dy^2)``, ``K_v`` its transpose, ``K_tl = K_h + K_v`` and ``K_bl`` that
    rotated 90 degrees counter-clockwise: the same kernels post-processing uses (correlation). Cached:
    treat the returned tensor as read-only.
    """
    table = gradient_kernels()
    return torch.from_numpy(np.stack([table[MAP_NAMES[m]] for m in maps]))[:, None]


def cisca_loss(
    outputs: dict[str, Tensor],
    contour: Tensor,
    directions: Tensor,
    weight: Tensor,
    types: Tensor | None = None,
    weights: LossWeights | None = None,
    *,
    msge_maps: MsgeMaps = "all",
) -> tuple[Tensor, dict[str, float]]:
    """Weighted CISCA loss of one batch.

    Parameters
    ----------
    outputs : decoder logits: "contour" (B, 3, H, W), "directions" (B, 4, H, W), "types" (B, T+1, H, W)
        when the decoder has a type head.
    contour : (B, H, W) long in {0 boundary, 1 body, 2 background}.
    directions : (B, 4, H, W) float target maps (h, v, tl, bl) in [-1, 1].
    weight : (B, H, W) float regression weight (1 near cells, 0.05 elsewhere).
    types : (B, H, W) long in 0..T (0 = background), or None for datasets without classes.
    weights : term weights; CISCA's defaults when None.
    msge_maps : "all" (default) or "diagonals" (the reference); see the module docstring.

    Returns
    -------
    total : scalar float32 tensor to back-propagate.
    values : floats of "total" and the unweighted terms "cce", "dice_boundary", "dice_body", ("type"),
        "mae", "msge".
    """
    if msge_maps not in MSGE_MAPS:
        raise EmbedstoreError(f"msge_maps {msge_maps!r} is unknown; choose one of {sorted(MSGE_MAPS)}")
    if (types is None) != ("types" not in outputs):
        raise EmbedstoreError(
            "the decoder's type head and the type targets disagree: set n_types to the dataset's number of "
            f"classes (decoder has a type head: {'types' in outputs}; type targets given: {types is not None})"
        )
    w = (weights or LossWeights()).normalised(types is not None)

    log_prob = F.log_softmax(outputs["contour"].float(), dim=1)
    prob = log_prob.exp()
    terms = {
        "cce": _cross_entropy(log_prob, contour),
        "dice_boundary": _dice(prob[:, BOUNDARY], contour == BOUNDARY),
        "dice_body": _dice(prob[:, BODY], contour == BODY),
    }
    if types is not None:
        type_log_prob = F.log_softmax(outputs["types"].float(), dim=1)
        one_hot = F.one_hot(types, type_log_prob.shape[1]).permute(0, 3, 1, 2).float()
        terms["type"] = _cross_entropy(type_log_prob, types) + _tversky(type_log_prob.exp(), one_hot)
    pred = outputs["directions"].float()
    w_map = weight.float()[:, None]
    terms["mae"] = _masked_l1(pred, directions.float(), w_map)
    terms["msge"] = _msge(pred, directions.float(), w_map, MSGE_MAPS[msge_maps])

    total = sum(w[name] * value for name, value in terms.items())
    values = torch.stack([total, *terms.values()]).detach().tolist()  # one device sync
    return total, dict(zip(["total", *terms], values))


def _cross_entropy(log_prob: Tensor, target: Tensor) -> Tensor:
    """Mean over pixels of -log(clip(p_target, EPS, 1 - EPS))."""
    clipped = log_prob.clamp(math.log(EPS), math.log1p(-EPS))
    return F.nll_loss(clipped, target)


def _dice(prob: Tensor, truth: Tensor) -> Tensor:
    """1 - (2 sum(y p) + 1) / (sum(y) + sum(p) + 1) over the whole batch."""
    y = truth.float()
    return 1 - (2 * (y * prob).sum() + 1) / (y.sum() + prob.sum() + 1)


def _tversky(prob: Tensor, one_hot: Tensor) -> Tensor:
    """Element-wise Tversky loss of the reference: mean(1 - clip((yp + e) / (0.7y + 0.3p + e)))."""
    index = (one_hot * prob + EPS) / (TVERSKY_ALPHA * one_hot + (1 - TVERSKY_ALPHA) * prob + EPS)
    return (1 - index.clamp(EPS, 1 - EPS)).mean()


def _masked_l1(pred: Tensor, true: Tensor, w: Tensor) -> Tensor:
    """mean(W |t - p|) / (mean(W) + e) + 0.01 mean((1 - W) |p|); W (B, 1, H, W) broadcasts over maps."""
    inside = (w * (true - pred).abs()).mean() / (w.mean() + EPS)
    return inside + OUTSIDE_PENALTY * ((1 - w) * pred.abs()).mean()


def _msge(pred: Tensor, true: Tensor, w: Tensor, maps: tuple[int, ...]) -> Tensor:
    """mean(W (K * p - K * t)^2) / (mean(W) + e) over ``maps``, K correlated with zero padding."""
    kernels = direction_kernels(maps).to(pred.device)
    diff = (pred - true)[:, list(maps)]
    grad = F.conv2d(diff, kernels, padding=kernels.shape[-1] // 2, groups=len(maps))
    return (w * grad.square()).mean() / (w.mean() + EPS)


def direction_mae_on_cells(pred_dirs: Tensor, true_dirs: Tensor, instance_or_mask: Tensor) -> float:
    """Validation metric: mean |pred - true| over the cell pixels of all direction maps.

    Parameters
    ----------
    pred_dirs, true_dirs : (B, 4, H, W) float.
    instance_or_mask : (B, H, W) instance ids or boolean mask; cells are its nonzero pixels.

    Returns
    -------
    The mean absolute error, or NaN when the batch has no cell pixel.
    """
    cells = torch.as_tensor(instance_or_mask) != 0
    if not bool(cells.any()):
        return math.nan
    error = (torch.as_tensor(pred_dirs).detach().float() - torch.as_tensor(true_dirs).float()).abs()
    return float(error.permute(0, 2, 3, 1)[cells].mean())


def contour_accuracy(logits: Tensor, contour: Tensor) -> float:
    """Fraction of pixels whose arg-max contour class is right; logits (B, 3, H, W), contour (B, H, W)."""
    return float((logits.detach().argmax(dim=1) == contour).float().mean())
