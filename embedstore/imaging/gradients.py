"""The 5x5 derivative kernels of the direction maps, shared by the MSGE loss and the post-processing."""

from __future__ import annotations

import numpy as np


def gradient_kernels() -> dict[str, np.ndarray]:
    """The reference's 5x5 derivative kernels, float32 (5, 5) each.

    ``K_h[dy, dx] = dx / (dx^2 + dy^2)`` (0 at the centre), ``K_v = K_h^T``, ``K_tl = K_h + K_v`` and
    ``K_bl`` = ``K_tl`` rotated 90 degrees counter-clockwise, which equals ``K_h - K_v``.
    """
    dy, dx = np.mgrid[-2:3, -2:3].astype(np.float64)
    norm = dx * dx + dy * dy
    norm[2, 2] = 1.0
    k_h = dx / norm
    k_tl = k_h + k_h.T
    return {name: k.astype(np.float32) for name, k in
            (("h", k_h), ("v", k_h.T), ("tl", k_tl), ("bl", np.rot90(k_tl)))}
