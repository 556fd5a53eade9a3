"""Validation of several decoders on one pass over the validation split."""

from __future__ import annotations

import math

import torch

from embedstore.trainer.data.loader import Loader
from embedstore.trainer.fit.losses import contour_accuracy, direction_mae_on_cells
from embedstore.trainer.fit.options import LossOptions
from embedstore.trainer.fit.step import batch_loss
from embedstore.trainer.fit.variants import pick_levels
from embedstore.trainer.model.decoder import CellDecoder


@torch.no_grad()
def validate(models: list[CellDecoder], data: Loader, loss: LossOptions, dev: torch.device
             ) -> list[dict[str, float]]:
    """Per model: validation loss terms (tile-weighted means), direction MAE on cell pixels, 3-class accuracy.

    Each validation batch is read once and fed to every model, each given the levels it reads out of
    the loader's (``data.levels`` must hold them all). Returns one dict per model with
    ``val_loss``, ``val_<term>``, ``val_direction_mae`` (NaN without cell pixels) and ``val_accuracy``;
    the models are left in train mode.
    """
    for model in models:
        model.eval()
    sums: list[dict[str, float]] = [{} for _ in models]
    tiles = cell_px = px = 0
    for batch in data.epoch(0):
        batch = batch.to(dev)
        n = len(batch)
        cells = batch.contour < 2  # boundary or body
        n_cell = int(cells.sum())
        tiles, cell_px, px = tiles + n, cell_px + n_cell, px + batch.contour.numel()
        for model, acc in zip(models, sums):
            out = model(pick_levels(data.levels, batch.levels, model.cfg.levels), batch.image)
            _, terms = batch_loss(out, batch, loss)
            for name, value in terms.items():
                key = "loss" if name == "total" else name
                acc[key] = acc.get(key, 0.0) + value * n
            if n_cell:
                mae = direction_mae_on_cells(out["directions"], batch.directions, cells)
                acc["@mae"] = acc.get("@mae", 0.0) + mae * n_cell
            accuracy = contour_accuracy(out["contour"], batch.contour)
            acc["@acc"] = acc.get("@acc", 0.0) + accuracy * batch.contour.numel()
    results = []
    for model, acc in zip(models, sums):
        model.train()
        result = {f"val_{k}": v / tiles for k, v in acc.items() if not k.startswith("@")}
        result["val_direction_mae"] = acc["@mae"] / cell_px if cell_px else math.nan
        result["val_accuracy"] = acc["@acc"] / px
        results.append(result)
    return results
