"""The epoch plan: which tile comes at which position of an epoch, in which dihedral view.

A pure function of the split's tiles, the shard size, the data seed and the epoch, so the order never
depends on the RAM mode, the reader threads or the models that consume the batches. Tiles are shuffled
with a shard-shuffle buffer: the split's shards ("blocks") are permuted, consecutive runs of
``window_blocks`` blocks form a window, and the tiles inside each window are permuted; a streaming
reader then needs only one window of blocks at a time.
"""

from __future__ import annotations

import numpy as np


def epoch_plan(tiles: np.ndarray, tiles_per_shard: int, seed: int, epoch: int, *, shuffle: bool,
               window_blocks: int, n_views: int, augment: bool) -> tuple[np.ndarray, np.ndarray]:
    """(tile order, view per position) of ``epoch``.

    Parameters
    ----------
    tiles : int (n,) ascending store indices of the split's committed tiles.
    tiles_per_shard : tiles per store shard; tile t lies in block ``t // tiles_per_shard``.
    seed, epoch : together they fix the order and the views.
    shuffle : shard-shuffle (else store order).
    window_blocks : blocks per shuffle window.
    n_views, augment : draw a view in ``0..n_views-1`` per position when ``augment``, else view 0.

    Returns
    -------
    order, views : two int64 (n,) arrays; ``order`` is a permutation of ``tiles``.
    """
    rng = np.random.default_rng([seed, epoch])
    order = np.asarray(tiles).copy()
    if shuffle:
        blocks = np.unique(order // tiles_per_shard)
        blocks = blocks[rng.permutation(blocks.size)]
        parts = []
        for w in range(0, blocks.size, window_blocks):
            window = order[np.isin(order // tiles_per_shard, blocks[w:w + window_blocks])]
            parts.append(window[rng.permutation(window.size)])
        order = np.concatenate(parts)
    views = rng.integers(0, n_views, order.size) if augment else np.zeros(order.size, dtype=np.int64)
    return order.astype(np.int64), views.astype(np.int64)


def window_bounds(order: np.ndarray, tiles_per_shard: int, window_blocks: int) -> list[tuple[int, int]]:
    """Position ranges [start, stop) of ``order`` that each touch at most ``window_blocks`` blocks.

    A new range starts where a block outside the current window's ``window_blocks`` blocks first
    appears; for a shard-shuffled order these are exactly the plan's shuffle windows.
    """
    if order.size == 0:
        return [(0, 0)]
    bounds, seen = [0], set()
    for i, b in enumerate(order // tiles_per_shard):
        if b not in seen and len(seen) == window_blocks:
            bounds.append(i)
            seen = set()
        seen.add(int(b))
    bounds.append(int(order.size))
    return list(zip(bounds[:-1], bounds[1:]))
