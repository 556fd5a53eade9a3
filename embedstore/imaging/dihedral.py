"""The 8 transforms of the dihedral group D4 on image-like arrays: cached views and their augmentation.

Index t in 0..7: ``k = t % 4`` quarter turns counter-clockwise (np.rot90 on the spatial axes), applied
after a left-right flip when ``t >= 4``. t = 0 is the identity. The same indexing is used by extraction
(``--views 8``) and by the trainer, so a cached view t always pairs with the labels transformed by t.
"""

from __future__ import annotations

import numpy as np

N_VIEWS = 8


def dihedral(x: np.ndarray, t: int, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Return view ``t`` of ``x`` over its two spatial ``axes`` (rows, columns); a copy-free view when possible."""
    if not 0 <= t < N_VIEWS:
        raise ValueError(f"dihedral index must be in 0..7, got {t}")
    if t >= 4:
        x = np.flip(x, axis=axes[1])
    return np.rot90(x, k=t % 4, axes=axes)


def inverse(t: int) -> int:
    """Index of the transform that undoes ``t`` (flips are their own inverse; rotations invert k)."""
    return t if t >= 4 else (4 - t) % 4
