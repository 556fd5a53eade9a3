"""The epoch plan: a pure function of (tiles, shard size, seed, epoch), shuffled within windows of blocks."""

from __future__ import annotations

import numpy as np

from embedstore.trainer.data.plan import epoch_plan, window_bounds

PER_SHARD = 4
TILES = np.array([t for t in range(40) if t % 3])  # 27 tiles over 10 blocks, some blocks partly in the split


def _plan(seed: int = 0, epoch: int = 0, window_blocks: int = 2, **kwargs):
    options = {"shuffle": True, "window_blocks": window_blocks, "n_views": 8, "augment": True, **kwargs}
    return epoch_plan(TILES, PER_SHARD, seed, epoch, **options)


def test_the_same_seed_and_epoch_give_the_same_order_and_views() -> None:
    (a, va), (b, vb) = _plan(3, 5), _plan(3, 5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(va, vb)
    assert a.dtype == va.dtype == np.int64 and sorted(a.tolist()) == TILES.tolist()


def test_other_epochs_and_seeds_give_other_orders() -> None:
    order = _plan(3, 5)[0]
    assert not np.array_equal(order, _plan(3, 6)[0])
    assert not np.array_equal(order, _plan(4, 5)[0])


def test_a_window_never_mixes_more_than_window_blocks_blocks() -> None:
    for window_blocks in (1, 2, 3):
        order = _plan(1, 2, window_blocks=window_blocks)[0]
        bounds = window_bounds(order, PER_SHARD, window_blocks)
        assert bounds[0][0] == 0 and bounds[-1][1] == order.size
        assert all(stop == start for (_, stop), (start, _) in zip(bounds, bounds[1:]))
        blocks = [set((order[a:b] // PER_SHARD).tolist()) for a, b in bounds]
        assert all(len(w) <= window_blocks for w in blocks)
        assert all(not (x & y) for i, x in enumerate(blocks) for y in blocks[i + 1:])  # a block lies in one window
        assert len(bounds) == -(-len(np.unique(TILES // PER_SHARD)) // window_blocks)


def test_without_shuffle_or_augment_the_plan_is_store_order_in_view_zero() -> None:
    order, views = _plan(7, 9, shuffle=False, augment=False)
    np.testing.assert_array_equal(order, TILES)
    assert not views.any()


def test_augmented_views_cover_every_cached_view() -> None:
    views = np.concatenate([_plan(0, e)[1] for e in range(4)])
    assert set(views.tolist()) == set(range(8))
