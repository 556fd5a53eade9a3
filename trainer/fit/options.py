"""The option groups of :func:`~embedstore.trainer.fit.train.train`: plain dataclasses, importable without torch.

The CLI builds them from its options; their defaults are the Python defaults of ``train``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

from embedstore.errors import EmbedstoreError
from embedstore.trainer.data.memory import RamCache

MsgeMaps = Literal["all", "diagonals"]
"""Direction maps of the gradient (MSGE) loss term: all four, or CISCA's two diagonals."""


@dataclass(frozen=True)
class DataOptions:
    """Which tiles a run trains and validates on, in which order and batches, and where they are held.

    Attributes
    ----------
    split_train, split_val : split names; the validation split drives early stopping and the LR schedule.
    data_seed : fixes the data order and the drawn views (independent of the decoder seeds).
    batch_size : tiles per batch.
    ram_cache : hold the splits' features in RAM ("on"), stream them ("off"), or decide by memory ("auto").
    require_complete : refuse a partly extracted feature group instead of training on its committed tiles.
    """

    split_train: str = "train"
    split_val: str = "val"
    data_seed: int = 0
    batch_size: int = 4
    ram_cache: RamCache = "auto"
    require_complete: bool = False


@dataclass(frozen=True)
class Optimisation:
    """Optimiser, schedule and stopping settings (CISCA's defaults, see :mod:`embedstore.trainer.fit.train`).

    Attributes
    ----------
    lr, adam_eps : Adam (AMSGrad) learning rate and epsilon.
    clip_norm : per-tensor gradient L2-norm clip (CISCA: 1e-3); None = off.
    lr_factor, lr_patience : ReduceLROnPlateau on the validation loss.
    stop_patience : epochs without a better validation loss before a seed stops.
    """

    lr: float = 5e-4
    adam_eps: float = 1e-7
    clip_norm: float | None = None
    lr_factor: float = 0.5
    lr_patience: int = 10
    stop_patience: int = 20


@dataclass(frozen=True)
class LossWeights:
    """Unnormalised term weights; ``normalised`` divides them by the sum of the terms in use.

    Defaults are CISCA's: [2, 1, 2, 5, 2, 2] / 14 with a type head, [2, 1, 2, 2, 2] / 9 without.
    """

    cce: float = 2.0
    dice_boundary: float = 1.0
    dice_body: float = 2.0
    type: float = 5.0
    mae: float = 2.0
    msge: float = 2.0

    def normalised(self, with_types: bool) -> dict[str, float]:
        """Weights of the terms in use (``type`` only ``with_types``), summing to 1."""
        used = asdict(self)
        if not with_types:
            del used["type"]
        total = sum(used.values())
        if any(v < 0 for v in used.values()) or total <= 0:
            raise EmbedstoreError(f"loss weights {used} must be >= 0 with a positive sum")
        return {name: value / total for name, value in used.items()}


@dataclass(frozen=True)
class LossOptions:
    """The training objective: term weights and the direction maps of the gradient term (see ``cisca_loss``)."""

    weights: LossWeights = field(default_factory=LossWeights)
    msge_maps: MsgeMaps = "all"

    def __post_init__(self) -> None:
        if self.msge_maps not in get_args(MsgeMaps):
            raise EmbedstoreError(f"--msge-maps {self.msge_maps}: expected one of {sorted(get_args(MsgeMaps))}")
