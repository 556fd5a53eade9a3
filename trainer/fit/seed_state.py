"""One seed's decoder with its optimiser, LR schedule and early stopping, and their checkpoints.

Every seed of a run trains on the same batches; a seed only fixes its decoder's initial weights. The
``last`` checkpoint (weights, optimiser, scheduler, early stopping, position in the epoch) lets a run
continue bit for bit; ``best`` holds the weights of the best validation loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from embedstore.errors import EmbedstoreError
from embedstore.trainer.fit.options import Optimisation
from embedstore.trainer.model.checkpoint import load_state, load_weights, save_state, save_weights
from embedstore.trainer.model.decoder import CellDecoder, DecoderConfig, build_decoder
from embedstore.trainer.run_folder import RunDir

Position = tuple[int, int]
"""(epoch, batches done in it): where a run continues."""


def build_optimizer(model: nn.Module, hyper: Optimisation) -> torch.optim.Adam:
    """Adam with AMSGrad (CISCA)."""
    return torch.optim.Adam(model.parameters(), lr=hyper.lr, eps=hyper.adam_eps, amsgrad=True)


@dataclass
class SeedState:
    """One seed's decoder and its optimiser, scheduler and early-stopping state."""

    seed: int
    model: CellDecoder
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    run: RunDir
    best_val: float = math.inf
    best_epoch: int = -1
    wait: int = 0
    stopped: bool = False
    best_metrics: dict[str, float] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)  # running train-loss sums of the current epoch

    @property
    def best(self) -> Path:
        return self.run.checkpoint(self.seed, "best")

    @property
    def last(self) -> Path:
        return self.run.checkpoint(self.seed, "last")

    def stopping(self) -> dict[str, Any]:
        """The early-stopping state saved with ``last`` (restored attribute by attribute)."""
        return {"best_val": self.best_val, "best_epoch": self.best_epoch, "wait": self.wait,
                "stopped": self.stopped, "best_metrics": self.best_metrics, "sums": self.sums}

    def add_train_terms(self, n: int, terms: dict[str, float]) -> None:
        """Accumulate the loss terms of a batch of ``n`` tiles (tile-weighted; ``total`` as ``loss``)."""
        self.sums["tiles"] = self.sums.get("tiles", 0) + n
        for name, value in terms.items():
            key = "loss" if name == "total" else name
            self.sums[key] = self.sums.get(key, 0.0) + value * n

    def train_mean(self, key: str) -> float:
        return self.sums.get(key, 0.0) / max(self.sums.get("tiles", 0), 1)

    def train_means(self) -> dict[str, float]:
        """``train_<term>``: the epoch's tile-weighted mean of every accumulated term."""
        return {f"train_{k}": self.train_mean(k) for k in self.sums if k != "tiles"}

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def end_epoch(self, epoch: int, val: dict[str, float], stop_patience: int) -> None:
        """Step the scheduler on the val loss, save ``best`` on improvement, else count towards stopping."""
        self.scheduler.step(val["val_loss"])
        if val["val_loss"] < self.best_val:
            self.best_val, self.best_epoch, self.wait = val["val_loss"], epoch, 0
            self.best_metrics = {k: val[k] for k in ("val_loss", "val_direction_mae", "val_accuracy")}
            save_weights(self.best, self.model,
                         {"decoder": self.model.cfg.to_dict(), "epoch": epoch, "seed": self.seed, **self.best_metrics})
        else:
            self.wait += 1
            self.stopped = self.wait >= stop_patience

    def save_last(self, epoch: int, batches_done: int) -> None:
        """Checkpoint at (epoch, batches_done): weights, optimizer, scheduler, early stopping."""
        position = [epoch, batches_done]
        save_weights(self.last, self.model,
                     {"decoder": self.model.cfg.to_dict(), "epoch": epoch, "seed": self.seed, "position": position})
        save_state(self.run.seed_dir(self.seed), self.optimizer,
                   {"position": position, "scheduler": self.scheduler.state_dict(), "stopping": self.stopping()})

    def restore_last(self) -> Position:
        """Load the ``last`` checkpoint into this state; return its position."""
        folder = self.run.seed_dir(self.seed)
        if not self.last.is_file():
            raise EmbedstoreError(f"{folder}: no {self.last.name} to resume from")
        meta = load_weights(self.last, self.model)
        state = load_state(folder, self.optimizer)
        if meta.get("position") != state["position"]:
            raise EmbedstoreError(f"{folder}: {self.last.name} and the training state are from different steps")
        self.scheduler.load_state_dict(state["scheduler"])
        for key, value in state["stopping"].items():
            setattr(self, key, value)
        return tuple(state["position"])

    def load_best(self) -> None:
        """Load the ``best`` weights back into the decoder (when a best epoch was saved)."""
        if self.best.is_file():
            load_weights(self.best, self.model)


def build_seed(seed: int, cfg: DecoderConfig, run: RunDir, dev: torch.device, hyper: Optimisation) -> SeedState:
    """Seeded decoder, Adam (AMSGrad) and ReduceLROnPlateau (any decrease of the val loss counts)."""
    torch.manual_seed(seed)
    model = build_decoder(cfg).to(dev)
    optimizer = build_optimizer(model, hyper)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=hyper.lr_factor,
                                                           patience=hyper.lr_patience, threshold=0.0,
                                                           threshold_mode="abs")
    run.seed_dir(seed).mkdir(parents=True, exist_ok=True)
    return SeedState(seed, model, optimizer, scheduler, run)


def restore_seeds(states: list[SeedState], run: RunDir) -> Position:
    """Load every seed's last checkpoint; return the common position to continue from."""
    positions = {s.restore_last() for s in states}
    if len(positions) != 1:
        raise EmbedstoreError(f"{run.path}: seed checkpoints are at different steps {sorted(positions)}; cannot resume")
    return positions.pop()
