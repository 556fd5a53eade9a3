"""The one training step of a decoder: forward, CISCA loss, backward, optional clip, optimiser step.

Training (:mod:`embedstore.trainer.fit.train`) and the training benchmark (:mod:`embedstore.trainer.bench.train`)
both step through :func:`train_step`, so the benchmark times exactly what training runs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from embedstore.errors import EmbedstoreError

from embedstore.trainer.data.batch import Batch
from embedstore.trainer.fit.losses import cisca_loss
from embedstore.trainer.fit.options import LossOptions


def batch_loss(outputs: dict[str, torch.Tensor], batch: Batch, loss: LossOptions
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of ``batch`` given the decoder's ``outputs``: (scalar to back-propagate, term floats)."""
    return cisca_loss(outputs, batch.contour, batch.directions, batch.weight, batch.types, loss.weights,
                      msge_maps=loss.msge_maps)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, loss: LossOptions, *,
               clip_norm: float | None = None, levels: list[torch.Tensor] | None = None) -> dict[str, float]:
    """One optimiser step of ``model`` on ``batch``; returns the loss terms ("total", "cce", ...) as floats.

    ``levels`` replaces ``batch.levels`` as the decoder input (the benchmark's online-encoder arm);
    ``clip_norm`` clips every gradient tensor to that L2 norm on its own (Keras ``clipnorm``).
    """
    outputs = model(batch.levels if levels is None else levels, batch.image)
    total, terms = batch_loss(outputs, batch, loss)
    if not math.isfinite(terms["total"]):  # never step on NaN: it would silently ruin the weights
        raise EmbedstoreError(f"training loss is {terms['total']} on the batch of tiles "
                              f"{', '.join(map(str, batch.tiles[:8].tolist()))}; lower --lr or check the store "
                              "with `embed verify`")
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if clip_norm is not None:
        for p in model.parameters():
            if p.grad is not None:
                torch.nn.utils.clip_grad_norm_(p, clip_norm)
    optimizer.step()
    return terms
