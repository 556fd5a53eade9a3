"""`embed train`: fit K decoders (one per seed) on a store's cached features in one pass over the data.

Every batch is read once and fed to every seed's decoder, so K seeds cost one read. The data order and
the drawn views depend on ``data_seed`` and the epoch only (see :mod:`embedstore.trainer.data.loader`), and a
seed only fixes its decoder's initial weights; hence K seeds in one pass give the same weights as K
separate runs, and a resumed run continues bit for bit on CPU (deterministic algorithms on). Nothing
draws from a global random generator after the decoders are built, so no RNG state is checkpointed.

Optimisation follows CISCA (research notes §3): Adam with AMSGrad (lr 5e-4, eps 1e-7), ReduceLROnPlateau
on the validation loss (factor 0.5, patience 10), early stopping (patience 20, best weights kept in
``best.safetensors`` and loaded back at the end). CISCA clips every gradient tensor to L2 norm 1e-3
(Keras ``clipnorm``); here per-tensor clipping is optional (``clip_norm``) and off by default: Adam
already divides each step by a running gradient scale, so rescaling whole tensors changes little (on 36
MoNuSeg tiles, 30 epochs: val direction MAE 0.343 with the clip, 0.335 without), and a fixed 1e-3 norm
would make the step size depend on the tensor's size.

What moves the direction maps (measured: synthetic 128 px tiles, 60 train x 8 cached views, lite decoder,
random tiny-vit features, 25 epochs; predicting zeros scores 0.448): val direction MAE on cell pixels 0.179
with the gradient (MSGE) term on all four maps (the default), 0.197 on the diagonals only (CISCA), 0.271
without it (still 0.446 after 10 epochs: masked L1 alone barely leaves the all-zero solution); lr 2e-3
gave 0.168. The 8 cached views (augmentation) cut over-fitting on 36 MoNuSeg tiles (best val MAE 0.301
vs 0.335).

Run folder (``out``)::

    config.json          resolved configuration: store, encoder key + fingerprint, decoder, dataset, data
    metrics.jsonl/.csv   one row per epoch and seed: train/val loss terms, val direction MAE on cell
                         pixels, val 3-class accuracy, lr, tiles/s
    curves.png           training curves
    seed_<k>/best.safetensors, last.safetensors, state.safetensors, state.json
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from embedstore import __version__
from embedstore.errors import EmbedstoreError
from embedstore.device import resolve_device
from embedstore.progress import progress_bar
from embedstore.store import open_store
from embedstore.trainer.model.checkpoint import load_state, load_weights, save_state, save_weights
from embedstore.trainer.fit.curves import plot_curves
from embedstore.trainer.model.decoder import CellDecoder, DecoderConfig, build_decoder, count_parameters
from embedstore.trainer.data.loader import Batch, Loader, RamCache, describe
from embedstore.trainer.fit.losses import MSGE_MAPS, LossWeights, cisca_loss, contour_accuracy, direction_mae_on_cells

#: Config fields a resumed run must share with the run it continues (others, e.g. epochs, may change).
_RESUME_FIELDS = ("dataset", "encoder_key", "encoder_fingerprint", "decoder", "seeds", "data_seed",
                  "batch_size", "lr", "adam_eps", "clip_norm", "lr_factor", "lr_patience", "stop_patience",
                  "loss_weights", "msge_maps", "split_train", "split_val", "train_tiles")


class TrainInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: the ``last`` checkpoint was saved; ``str()`` says how to resume."""


@dataclass
class SeedResult:
    """Outcome of one seed's decoder."""

    seed: int
    best_epoch: int
    best_val_loss: float
    val_direction_mae: float
    val_accuracy: float
    epochs_run: int
    stopped_early: bool
    best: Path
    last: Path


@dataclass
class TrainReport:
    """What ``train`` did: per-seed results, sizes and speed; ``dry_run`` reports only parameter counts."""

    run_dir: Path | None
    parameters: int
    decoder: dict[str, Any]
    train_tiles: int
    val_tiles: int
    missing_tiles: int
    seeds: list[SeedResult] = field(default_factory=list)
    epochs: int = 0
    seconds: float = 0.0
    tiles_per_s: float = 0.0
    dry_run: bool = False


@dataclass(frozen=True)
class Optimisation:
    """Optimiser, schedule and stopping settings (CISCA's defaults, see the module docstring)."""

    lr: float = 5e-4
    adam_eps: float = 1e-7
    clip_norm: float | None = None
    lr_factor: float = 0.5
    lr_patience: int = 10
    stop_patience: int = 20


@dataclass(frozen=True)
class _Objective:
    """The training loss of a batch: CISCA's weighted terms (see :func:`cisca_loss`)."""

    weights: LossWeights
    msge_maps: str

    def __call__(self, outputs: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        return cisca_loss(outputs, batch.contour, batch.directions, batch.weight, batch.types, self.weights,
                          msge_maps=self.msge_maps)


@dataclass
class _Seed:
    """One seed's decoder and its optimiser, scheduler and early-stopping state."""

    seed: int
    model: CellDecoder
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    folder: Path
    best_val: float = math.inf
    best_epoch: int = -1
    wait: int = 0
    stopped: bool = False
    best_metrics: dict[str, float] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)  # running train-loss sums of the current epoch

    def stop_state(self) -> dict[str, Any]:
        return {"best_val": self.best_val, "best_epoch": self.best_epoch, "wait": self.wait,
                "stopped": self.stopped, "best_metrics": self.best_metrics, "sums": self.sums}


def train(store_path: str | Path, *, encoder_key: str | None = None, split_train: str = "train",
          split_val: str = "val", seeds: tuple[int, ...] = (0,), data_seed: int = 0, decoder: str = "lite",
          levels: tuple[int, ...] = (0, 1, 2, 3), epochs: int = 100, batch_size: int = 4, lr: float = 5e-4,
          adam_eps: float = 1e-7, clip_norm: float | None = None, lr_factor: float = 0.5, lr_patience: int = 10,
          stop_patience: int = 20, loss_weights: LossWeights | None = None, msge_maps: str = "all",
          device: str = "auto",
          out: str | Path = "runs/train", resume: bool = False, ram_cache: RamCache = "auto",
          require_complete: bool = False, deterministic: bool | None = None, dry_run: bool = False,
          show_progress: bool = True) -> TrainReport:
    """Train one decoder per seed on ``split_train``, validating on ``split_val`` after every epoch.

    Parameters
    ----------
    store_path : store location (opened read-only).
    encoder_key : feature group (encoder name); None takes the store's only group.
    seeds : one decoder per seed, all fed the same batches.
    data_seed : fixes the data order and drawn views (independent of ``seeds``).
    decoder, levels : decoder preset ("lite" / "cisca") and the levels it reads.
    clip_norm : per-tensor gradient L2-norm clip (CISCA: 1e-3); None = off.
    lr_factor, lr_patience : ReduceLROnPlateau on the validation loss.
    stop_patience : epochs without a better validation loss before a seed stops.
    loss_weights, msge_maps : loss term weights and the direction maps of the gradient term ("all" or
        "diagonals", CISCA's choice); see :func:`cisca_loss`.
    deterministic : torch deterministic algorithms; None = on for CPU, off for CUDA.
    out : run folder; must not hold a run unless ``resume``.
    resume : continue the run in ``out`` from its last checkpoint (same store, encoder and config).
    dry_run : build the decoders and report parameter counts; no training, nothing written.

    Raises
    ------
    EmbedstoreError : bad store, encoder, split, options or an incompatible checkpoint.
    TrainInterrupted : on Ctrl-C, after saving the ``last`` checkpoint of every seed.
    """
    hyper = Optimisation(lr, adam_eps, clip_norm, lr_factor, lr_patience, stop_patience)
    if not seeds or len(set(seeds)) != len(seeds):
        raise EmbedstoreError(f"--seeds {list(seeds)}: give one or more distinct seeds")
    if epochs < 1:
        raise EmbedstoreError(f"--epochs {epochs}: must be >= 1")
    store = open_store(store_path, mode="r")
    run = Path(out)
    if not dry_run:
        _check_run_folder(run, resume)
    dev = resolve_device(device)
    weights = loss_weights or LossWeights()
    prefetch = 0 if dev.type == "cpu" else 2  # on CPU the decoder uses every core; a reader thread only slows it
    if msge_maps not in MSGE_MAPS:
        raise EmbedstoreError(f"--msge-maps {msge_maps}: expected one of {sorted(MSGE_MAPS)}")
    train_data = Loader(store, split_train, encoder_key=encoder_key, levels=levels, batch_size=batch_size,
                        shuffle=True, augment=True, seed=data_seed, ram_cache=ram_cache,
                        require_complete=require_complete, prefetch=prefetch,
                        show_progress=show_progress and not dry_run)
    val_data = Loader(store, split_val, encoder_key=train_data.key, levels=levels, batch_size=batch_size,
                      shuffle=False, augment=False, seed=data_seed, ram_cache=ram_cache,
                      require_complete=require_complete, prefetch=prefetch,
                        show_progress=show_progress and not dry_run)
    group = train_data.group
    if show_progress and not dry_run and (train_data.n_missing or val_data.n_missing):
        Console(stderr=True).print(
            f"{store.location}: features/{train_data.key} is partly extracted: training on the committed tiles, "
            f"{train_data.n_missing} '{split_train}' and {val_data.n_missing} '{split_val}' tiles missing")
    cfg = DecoderConfig(preset=decoder, level_dims=tuple(s[0] for s in train_data.level_shapes),
                        level_grids=tuple(s[1] for s in train_data.level_shapes), n_types=train_data.n_types,
                        tile_size=store.tile_size, levels=levels)
    config = {
        "store": str(Path(store.location).resolve()) if "://" not in store.location else store.location,
        "encoder_key": train_data.key,
        "encoder_fingerprint": group.attrs.get("fingerprint"),
        "encoder": group.attrs.get("encoder"),
        "decoder": cfg.to_dict(),
        "dataset": store.dataset,
        "seeds": list(seeds), "data_seed": data_seed, "split_train": split_train, "split_val": split_val,
        "train_tiles": train_data.n_tiles, "val_tiles": val_data.n_tiles,
        "train_data": describe(train_data), "val_data": describe(val_data),
        "epochs": epochs, "batch_size": batch_size, **asdict(hyper),
        "loss_weights": asdict(weights), "msge_maps": msge_maps, "device": str(dev), "embedstore": __version__,
    }
    report = TrainReport(run_dir=None if dry_run else Path(out), parameters=0, decoder=cfg.to_dict(),
                         train_tiles=train_data.n_tiles, val_tiles=val_data.n_tiles,
                         missing_tiles=train_data.n_missing + val_data.n_missing, dry_run=dry_run)
    report.parameters = count_parameters(build_decoder(cfg))
    if dry_run:
        return report

    _write_config(run, config, resume)
    if deterministic is None:
        deterministic = dev.type == "cpu"
    with _deterministic(deterministic):
        states = [_make_seed(seed, cfg, run, dev, hyper) for seed in seeds]
        position = _restore(states, run) if resume else (0, 0)
        _fit(states, train_data, val_data, _Objective(weights, msge_maps), hyper, run, position, epochs, dev,
             show_progress, report)
    return report


# --- setup --------------------------------------------------------------------------------------------


def _check_run_folder(run: Path, resume: bool) -> None:
    """A new run needs a folder without a run in it; a resumed one needs its config.json."""
    has_run = (run / "config.json").is_file()
    if resume and not has_run:
        raise EmbedstoreError(f"{run}: no run to resume (no config.json); drop --resume to start one")
    if not resume and has_run:
        raise EmbedstoreError(f"{run}: already holds a run; pass --resume to continue it or choose another --out")


def _write_config(run: Path, config: dict[str, Any], resume: bool) -> None:
    """Write config.json of a new run, or check that a resumed run's config is compatible (and keep it)."""
    cfg_path = run / "config.json"
    if resume:
        old = json.loads(cfg_path.read_text())
        new = json.loads(json.dumps(config))
        diff = [k for k in _RESUME_FIELDS if old.get(k) != new.get(k)]
        if diff:
            raise EmbedstoreError(f"{run}: cannot resume: the checkpoint was trained with a different "
                                  f"{', '.join(diff)}; start a new run with another --out")
    run.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(json.dumps(config, indent=1))


def _make_seed(seed: int, cfg: DecoderConfig, run: Path, dev: torch.device, hyper: Optimisation) -> _Seed:
    """Seeded decoder, Adam (AMSGrad) and ReduceLROnPlateau (any decrease of the val loss counts)."""
    torch.manual_seed(seed)
    model = build_decoder(cfg).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=hyper.lr, eps=hyper.adam_eps, amsgrad=True)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=hyper.lr_factor,
                                                           patience=hyper.lr_patience, threshold=0.0,
                                                           threshold_mode="abs")
    folder = run / f"seed_{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    return _Seed(seed, model, optimizer, scheduler, folder)


def _restore(states: list[_Seed], run: Path) -> tuple[int, int]:
    """Load every seed's last checkpoint; return the common (epoch, batches done) to continue from."""
    positions = set()
    for s in states:
        last = s.folder / "last.safetensors"
        if not last.is_file():
            raise EmbedstoreError(f"{s.folder}: no last.safetensors to resume from")
        meta = load_weights(last, s.model)
        state = load_state(s.folder, s.optimizer)
        if meta.get("position") != state["position"]:
            raise EmbedstoreError(f"{s.folder}: last.safetensors and state.json are from different steps")
        s.scheduler.load_state_dict(state["scheduler"])
        for key, value in state["stopping"].items():
            setattr(s, key, value)
        positions.add(tuple(state["position"]))
    if len(positions) != 1:
        raise EmbedstoreError(f"{run}: seed checkpoints are at different steps {sorted(positions)}; cannot resume")
    epoch, done = positions.pop()
    _truncate_metrics(run, epoch)
    return epoch, done


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


@contextlib.contextmanager
def _sigint_flag() -> Iterator[dict[str, bool]]:
    """Turn the first Ctrl-C into a flag checked between batches; a second one interrupts at once."""
    flag = {"set": False}

    def handler(signum: int, frame: Any) -> None:
        if flag["set"]:
            raise KeyboardInterrupt
        flag["set"] = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: Ctrl-C cannot reach us anyway
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# --- the loop -----------------------------------------------------------------------------------------


def _fit(states: list[_Seed], train_data: Loader, val_data: Loader, objective: _Objective, hyper: Optimisation,
         run: Path, position: tuple[int, int], epochs: int, dev: torch.device, show_progress: bool,
         report: TrainReport) -> None:
    """The epoch loop from ``position`` = (epoch, batches done); fills ``report``."""
    start_epoch, start_batch = position
    status = {"text": ""}
    n_batches = len(train_data)
    total = max(0, (epochs - start_epoch) * train_data.n_tiles - start_batch * train_data.batch_size)
    t_run = time.perf_counter()
    seen = 0
    with _sigint_flag() as interrupted, \
            progress_bar(f"train {run.name}", total=total, unit="tiles", enabled=show_progress,
                         status=lambda: status["text"]) as advance:
        for epoch in range(start_epoch, epochs):
            active = [s for s in states if not s.stopped]
            if not active:
                break
            first = start_batch if epoch == start_epoch else 0
            if first == 0:
                for s in active:
                    s.sums = {}
            t0 = time.perf_counter()
            tiles = 0
            for s in active:
                s.model.train()
            for b, batch in enumerate(train_data.epoch(epoch, start_batch=first), start=first):
                batch = batch.to(dev)
                for s in active:
                    _step(s, batch, objective, hyper.clip_norm)
                tiles += len(batch)
                advance(len(batch))
                status["text"] = f"epoch {epoch + 1}/{epochs} loss {_mean(active[0].sums, 'loss'):.4f}"
                if interrupted["set"]:
                    _save_last(states, epoch, b + 1)
                    _finish(states, run)
                    raise TrainInterrupted(f"interrupted; saved {run}/seed_*/last.safetensors at epoch {epoch + 1}, "
                                           f"batch {b + 1}/{n_batches}; continue with --resume --out {run}")
            seconds = time.perf_counter() - t0
            seen += tiles
            vals = _validate([s.model for s in active], val_data, objective, dev)
            rows = [_end_epoch(s, epoch, val, tiles, seconds, hyper) for s, val in zip(active, vals)]
            head = rows[0]
            status["text"] = (f"epoch {epoch + 1}/{epochs} val loss {head['val_loss']:.4f} "
                              f"dir MAE {head['val_direction_mae']:.3f} acc {head['val_accuracy']:.3f}")
            _append_metrics(run, rows)  # before the checkpoint: a resume drops rows of unfinished epochs
            _save_last(states, epoch + 1, 0)
            if interrupted["set"]:
                _finish(states, run)
                raise TrainInterrupted(f"interrupted; saved {run}/seed_*/last.safetensors after epoch {epoch + 1}; "
                                       f"continue with --resume --out {run}")
    report.seconds = time.perf_counter() - t_run
    report.tiles_per_s = seen / report.seconds if report.seconds else 0.0
    report.epochs = max((int(r["epoch"]) + 1 for r in _read_metrics(run)), default=0)
    report.seeds = _finish(states, run)


def _end_epoch(s: _Seed, epoch: int, val: dict[str, float], tiles: int, seconds: float,
               hyper: Optimisation) -> dict[str, Any]:
    """Step the scheduler, keep the best weights, update early stopping; return the seed's metrics row."""
    row = {"epoch": epoch, "seed": s.seed,
           **{f"train_{k}": v / max(s.sums.get("tiles", 0), 1) for k, v in s.sums.items() if k != "tiles"},
           **val, "lr": s.optimizer.param_groups[0]["lr"], "tiles_per_s": tiles / seconds if seconds else 0.0,
           "seconds": seconds}
    s.scheduler.step(val["val_loss"])
    if val["val_loss"] < s.best_val:
        s.best_val, s.best_epoch, s.wait = val["val_loss"], epoch, 0
        s.best_metrics = {k: val[k] for k in ("val_loss", "val_direction_mae", "val_accuracy")}
        save_weights(s.folder / "best.safetensors", s.model,
                     {"decoder": s.model.cfg.to_dict(), "epoch": epoch, "seed": s.seed, **s.best_metrics})
    else:
        s.wait += 1
        s.stopped = s.wait >= hyper.stop_patience
    return row


def _step(s: _Seed, batch: Batch, objective: _Objective, clip_norm: float | None) -> None:
    """One optimiser step of one seed's decoder on ``batch``; accumulates the tile-weighted loss terms."""
    outputs = s.model(batch.levels, batch.image)
    total, terms = objective(outputs, batch)
    s.optimizer.zero_grad(set_to_none=True)
    total.backward()
    if clip_norm is not None:
        for p in s.model.parameters():
            if p.grad is not None:
                torch.nn.utils.clip_grad_norm_(p, clip_norm)
    s.optimizer.step()
    n = len(batch)
    s.sums["tiles"] = s.sums.get("tiles", 0) + n
    for name, value in terms.items():
        key = "loss" if name == "total" else name
        s.sums[key] = s.sums.get(key, 0.0) + value * n


def _mean(sums: dict[str, float], key: str) -> float:
    return sums.get(key, 0.0) / max(sums.get("tiles", 0), 1)


@torch.no_grad()
def _validate(models: list[CellDecoder], data: Loader, objective: _Objective, dev: torch.device
              ) -> list[dict[str, float]]:
    """Per model: validation loss terms (tile-weighted means), direction MAE on cell pixels, 3-class accuracy.

    Each validation batch is read once and fed to every model.
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
            out = model(batch.levels, batch.image)
            _, terms = objective(out, batch)
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


def _save_last(states: list[_Seed], epoch: int, batches_done: int) -> None:
    """Checkpoint every seed at (epoch, batches_done): weights, optimizer, scheduler, early stopping."""
    for s in states:
        position = [epoch, batches_done]
        save_weights(s.folder / "last.safetensors", s.model,
                     {"decoder": s.model.cfg.to_dict(), "epoch": epoch, "seed": s.seed, "position": position})
        save_state(s.folder, s.optimizer, {"position": position, "scheduler": s.scheduler.state_dict(),
                                           "stopping": s.stop_state()})


def _finish(states: list[_Seed], run: Path) -> list[SeedResult]:
    """Load each seed's best weights back, draw the curves and summarise."""
    results = []
    for s in states:
        best = s.folder / "best.safetensors"
        if best.is_file():
            load_weights(best, s.model)
        rows = [r for r in _read_metrics(run) if int(r["seed"]) == s.seed]
        results.append(SeedResult(
            seed=s.seed, best_epoch=s.best_epoch, best_val_loss=s.best_val,
            val_direction_mae=s.best_metrics.get("val_direction_mae", math.nan),
            val_accuracy=s.best_metrics.get("val_accuracy", math.nan), epochs_run=len(rows),
            stopped_early=s.stopped, best=best, last=s.folder / "last.safetensors"))
    rows = _read_metrics(run)
    if rows:
        plot_curves(rows, run / "curves.png")
    return results


# --- metrics log --------------------------------------------------------------------------------------


def _read_metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_csv(run: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(run / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _append_metrics(run: Path, rows: list[dict[str, Any]]) -> None:
    with open(run / "metrics.jsonl", "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    _write_csv(run, _read_metrics(run))


def _truncate_metrics(run: Path, epoch: int) -> None:
    """Drop rows of epochs >= ``epoch`` (written before a checkpoint that a kill prevented)."""
    rows = [r for r in _read_metrics(run) if int(r["epoch"]) < epoch]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _write_csv(run, rows)
