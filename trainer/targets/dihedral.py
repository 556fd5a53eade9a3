"""Dihedral (D4) views of training targets, equal to the targets recomputed from the transformed labels.

Cached encoder features hold up to 8 views of each tile (``embedstore.imaging.dihedral`` indexing); the targets of
view ``t`` are obtained here from the view-0 targets without recomputing them. Spatial maps move with the
pixels; the direction maps also change channel and sign, because a ramp along ``x`` becomes a ramp along
the transformed coordinate. With (h, v, tl, bl) ramping along (col, row, row + col, col - row):

- left-right flip (col -> W-1-col): h -> -h, v -> v, tl -> -bl, bl -> -tl;
- quarter turn counter-clockwise (np.rot90: new row = W-1-col, new col = row):
  h -> v, v -> -h, tl -> -bl, bl -> tl.

View ``t`` applies the flip (if ``t >= 4``) and then ``t % 4`` quarter turns; the channel rules compose the
same way (``channel_rule``).
"""

from __future__ import annotations

import numpy as np

from embedstore.imaging.dihedral import N_VIEWS, dihedral
from embedstore.trainer.targets.maps import Targets

# (source channel, sign) of each output channel: new[i] = sign[i] * old[source[i]]
_FLIP = (np.array([0, 1, 3, 2]), np.array([-1, 1, -1, -1], dtype=np.float32))
_TURN = (np.array([1, 0, 3, 2]), np.array([1, -1, -1, 1], dtype=np.float32))


def _then(first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray]
          ) -> tuple[np.ndarray, np.ndarray]:
    """Channel rule of applying ``first`` and then ``second``."""
    (src1, sign1), (src2, sign2) = first, second
    return src1[src2], sign2 * sign1[src2]


def _rule(t: int) -> tuple[np.ndarray, np.ndarray]:
    rule = (np.arange(4), np.ones(4, dtype=np.float32))
    if t >= 4:
        rule = _FLIP
    for _ in range(t % 4):
        rule = _then(rule, _TURN)
    return rule


_RULES = tuple(_rule(t) for t in range(N_VIEWS))


def channel_rule(t: int) -> tuple[np.ndarray, np.ndarray]:
    """How view ``t`` mixes the direction channels: ``new[i] = sign[i] * old[source[i]]``.

    Returns
    -------
    source : (4,) int64 channel index into (h, v, tl, bl).
    sign : (4,) float32 in {-1, 1}.
    Use it on spatially transformed maps (the two steps commute), e.g. in torch:
    ``maps[:, source] * sign[:, None, None]``.
    """
    if not 0 <= t < N_VIEWS:
        raise ValueError(f"dihedral index must be in 0..7, got {t}")
    source, sign = _RULES[t]
    return source.copy(), sign.copy()


def dihedral_directions(maps: np.ndarray, t: int) -> np.ndarray:
    """View ``t`` of direction maps ``(..., 4, H, W)`` float32: pixels moved, channels mixed and signed."""
    source, sign = channel_rule(t)
    moved = dihedral(maps, t, axes=(-2, -1))
    return moved[..., source, :, :] * sign[:, None, None]


def dihedral_targets(t: Targets, k: int) -> Targets:
    """View ``k`` (0..7) of one tile's targets; arrays are C-contiguous copies (ready for torch)."""
    def move(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(dihedral(x, k))

    return Targets(contour=move(t.contour), directions=np.ascontiguousarray(dihedral_directions(t.directions, k)),
                   weight=move(t.weight), types=None if t.types is None else move(t.types))


def dihedral_batch(maps: np.ndarray, views: np.ndarray, *, directions: bool = False) -> np.ndarray:
    """Per-sample views of a batch of maps, one vectorised call per distinct view.

    Parameters
    ----------
    maps : (B, ..., H, W) array; with ``directions=True`` its axis -3 holds (h, v, tl, bl).
    views : (B,) ints in 0..7, the view of each sample.
    directions : mix and sign the direction channels as well as moving the pixels.

    Returns
    -------
    (B, ..., H', W') array of the same dtype; odd views swap H and W, so mixing odd and even views needs
    square maps.
    """
    views = np.asarray(views)
    if views.shape != (len(maps),):
        raise ValueError(f"views must have shape ({len(maps)},), got {views.shape}")
    if directions and maps.shape[-3] != 4:
        raise ValueError(f"direction maps need 4 channels on axis -3, got shape {maps.shape}")
    height, width = maps.shape[-2:]
    turned = np.any(views % 2 == 1)
    if height != width and turned and not np.all(views % 2 == 1):
        raise ValueError(f"odd and even views of non-square maps ({height}x{width}) cannot share a batch")
    shape = (*maps.shape[:-2], width, height) if turned else maps.shape
    out = np.empty(shape, dtype=maps.dtype)
    for view in np.unique(views):
        chosen = views == view
        out[chosen] = (dihedral_directions(maps[chosen], int(view)) if directions
                       else dihedral(maps[chosen], int(view), axes=(-2, -1)))
    return out
