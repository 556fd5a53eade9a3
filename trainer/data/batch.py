"""A training batch and its collation from read tiles (the drawn view applied to image and targets)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from embedstore.imaging.dihedral import dihedral
from embedstore.trainer.data.reader import BlockTiles
from embedstore.trainer.targets.dihedral import dihedral_targets


@dataclass
class Batch:
    """One training batch (B tiles); the tensors the decoder and the losses take.

    Attributes
    ----------
    levels : used levels, each float32 (B, C_k, h_k, w_k), already in the drawn view.
    image : float32 (B, 3, S, S) RGB in [0, 1], in the drawn view.
    contour : int64 (B, S, S) in {0 boundary, 1 body, 2 background}.
    directions : float32 (B, 4, S, S) h, v, tl, bl in [-1, 1].
    weight : float32 (B, S, S) regression weight.
    types : int64 (B, S, S) class ids (0 = background), or None when the store has no classes.
    tiles : int64 (B,) store indices of the tiles.
    views : int64 (B,) dihedral view index of each tile.
    """

    levels: list[torch.Tensor]
    image: torch.Tensor
    contour: torch.Tensor
    directions: torch.Tensor
    weight: torch.Tensor
    types: torch.Tensor | None
    tiles: np.ndarray
    views: np.ndarray

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on ``device``."""
        def move(x: torch.Tensor) -> torch.Tensor:
            return x.to(device, non_blocking=True)

        return Batch(levels=[move(x) for x in self.levels], image=move(self.image), contour=move(self.contour),
                     directions=move(self.directions), weight=move(self.weight),
                     types=None if self.types is None else move(self.types), tiles=self.tiles, views=self.views)


Sample = tuple[BlockTiles, int, int]
"""(read tiles, row in them, drawn view) of one batch position."""


def collate(samples: list[Sample], *, all_views: bool, has_types: bool) -> Batch:
    """Stack samples into a batch, applying each drawn view to its image and targets.

    ``all_views``: the read tiles hold every cached view (RAM cache), so the drawn view is picked from
    the view axis; otherwise they hold only the drawn view (at index 0).
    """
    levels = []
    for k in range(len(samples[0][0].levels)):
        stacked = np.stack([t.levels[k][row, v if all_views else 0] for t, row, v in samples])
        levels.append(torch.from_numpy(stacked).float())
    images = np.stack([dihedral(t.images[row], v) for t, row, v in samples])
    targets = [dihedral_targets(t.targets[row], v) for t, row, v in samples]
    types = None
    if has_types:
        types = torch.from_numpy(np.stack([tg.types for tg in targets]).astype(np.int64))
    return Batch(
        levels=levels,
        image=torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0),
        contour=torch.from_numpy(np.stack([tg.contour for tg in targets]).astype(np.int64)),
        directions=torch.from_numpy(np.stack([tg.directions for tg in targets]).astype(np.float32)),
        weight=torch.from_numpy(np.stack([tg.weight for tg in targets]).astype(np.float32)),
        types=types,
        tiles=np.array([t.index[row] for t, row, _ in samples], dtype=np.int64),
        views=np.array([v for _, _, v in samples], dtype=np.int64),
    )
