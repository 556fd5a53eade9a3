"""`embed train`: fit K decoders (one per seed) on a store's cached features in one pass over the data.

Every batch is read once and fed to every seed's decoder, so K seeds cost one read. The data order and
the drawn views depend on ``data_seed`` and the epoch only (see :mod:`embedstore.trainer.data.plan`), and
a seed only fixes its decoder's initial weights; hence K seeds in one pass give the same weights as K
separate runs, and a resumed run continues bit for bit on CPU (deterministic algorithms on). Nothing
draws from a global random generator after the decoders are built, so no RNG state is checkpointed.

Optimisation follows CISCA (research notes §3): Adam with AMSGrad (lr 5e-4, eps 1e-7), ReduceLROnPlateau
on the validation loss (factor 0.5, patience 10), early stopping (patience 20, best weights kept in the
``best`` checkpoint and loaded back at the end). CISCA clips every gradient tensor to L2 norm 1e-3
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

The run folder (``out``, laid out by :class:`~embedstore.trainer.run_folder.RunDir`) holds the resolved
:class:`~embedstore.trainer.run_folder.RunConfig`, the metrics log (one row per epoch and seed: train/val
loss terms, val direction MAE on cell pixels, val 3-class accuracy, lr, tiles/s), the training curves and
per seed the best and last checkpoints with the training state.

Decoder variants (:func:`train_variants`) extend the one read per batch to several decoder designs:
variants that differ in the levels they read or in preset train together, every one with every seed, the
loader reading the union of their levels; each variant gets its own run folder ``<out>/<variant name>/``.
As with seeds, a variant trained with others gets the weights it gets alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from embedstore import __version__
from embedstore.device import resolve_device
from embedstore.errors import EmbedstoreError
from embedstore.progress import progress_bar
from embedstore.store import Store, open_store
from embedstore.trainer.data.loader import Loader, describe
from embedstore.trainer.fit.curves import plot_curves
from embedstore.trainer.fit.log import MetricsLog, epoch_row
from embedstore.trainer.fit.options import DataOptions, LossOptions, Optimisation
from embedstore.trainer.fit.run_control import deterministic_algorithms, sigint_flag
from embedstore.trainer.fit.seed_state import Position, SeedState, build_seed, restore_seeds
from embedstore.trainer.fit.step import train_step
from embedstore.trainer.fit.validate import validate
from embedstore.trainer.fit.variants import Variant, check_variants, default_name, pick_levels, union_levels
from embedstore.trainer.model.decoder import DecoderConfig, build_decoder, count_parameters
from embedstore.trainer.model.presets import DecoderPreset
from embedstore.trainer.run_folder import RunConfig, RunDir


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
    """What ``train`` did for one variant: per-seed results, sizes and speed (``seconds`` and ``tiles_per_s``
    are the whole pass's, shared by the variants trained together); ``dry_run`` reports only parameter counts."""

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
    variant: str = ""


def train(store_path: str | Path, out: str | Path = "runs/train", *, encoder_key: str | None = None,
          decoder: DecoderPreset = "lite", levels: tuple[int, ...] = (0, 1, 2, 3), seeds: tuple[int, ...] = (0,),
          epochs: int = 100, data: DataOptions = DataOptions(), optimisation: Optimisation = Optimisation(),
          loss: LossOptions = LossOptions(), device: str = "auto", resume: bool = False,
          deterministic: bool | None = None, dry_run: bool = False, show_progress: bool = True,
          say: Callable[[str], object] | None = None) -> TrainReport:
    """Train one decoder per seed on ``data.split_train``, validating on ``data.split_val`` after every epoch.

    Parameters
    ----------
    store_path : store location (opened read-only).
    out : run folder; must not hold a run unless ``resume``.
    encoder_key : feature group (encoder name); None takes the store's only group.
    decoder, levels : decoder preset ("lite" / "cisca") and the levels it reads; ``()`` reads none (the
        no-encoder baseline: RGB stem only, on the feature group's committed tiles, no level array read).
    seeds : one decoder per seed, all fed the same batches.
    epochs : maximum epochs (early stopping may end a seed sooner).
    data : splits, data seed, batch size, RAM cache (:class:`DataOptions`).
    optimisation : optimiser, LR schedule and early stopping (:class:`Optimisation`).
    loss : loss term weights and the direction maps of the gradient term (:class:`LossOptions`).
    deterministic : torch deterministic algorithms; None = on for CPU, off for CUDA.
    resume : continue the run in ``out`` from its last checkpoint (same store, encoder and config).
    dry_run : build the decoders and report parameter counts; no training, nothing written.
    say : receives a one-line notice when the feature group is only partly extracted (None: silent;
        ``TrainReport.missing_tiles`` counts the skipped tiles either way).

    Raises
    ------
    EmbedstoreError : bad store, encoder, split, options or an incompatible checkpoint.
    TrainInterrupted : on Ctrl-C, after saving the ``last`` checkpoint of every seed.
    """
    variant = Variant(default_name(decoder, levels), decoder, tuple(int(k) for k in levels))
    return _train(store_path, [(variant, RunDir(out))], RunDir(out), encoder_key=encoder_key, seeds=seeds,
                  epochs=epochs, data=data, optimisation=optimisation, loss=loss, device=device, resume=resume,
                  deterministic=deterministic, dry_run=dry_run, show_progress=show_progress, say=say)[0]


def train_variants(store_path: str | Path, out: str | Path, variants: list[Variant], *,
                   encoder_key: str | None = None, seeds: tuple[int, ...] = (0,), epochs: int = 100,
                   data: DataOptions = DataOptions(), optimisation: Optimisation = Optimisation(),
                   loss: LossOptions = LossOptions(), device: str = "auto", resume: bool = False,
                   deterministic: bool | None = None, dry_run: bool = False, show_progress: bool = True,
                   say: Callable[[str], object] | None = None) -> list[TrainReport]:
    """:func:`train` for several decoder variants in one pass: one report per variant, in ``variants`` order.

    Every batch is read once (the union of the variants' levels) and fed to every variant's decoder of
    every seed; variant ``v`` writes its run folder to ``out/v.name`` (``--resume`` continues them all).
    The other parameters are :func:`train`'s.
    """
    check_variants(variants)
    runs = [(v, RunDir(Path(out) / v.name)) for v in variants]
    return _train(store_path, runs, RunDir(out), encoder_key=encoder_key, seeds=seeds, epochs=epochs, data=data,
                  optimisation=optimisation, loss=loss, device=device, resume=resume,
                  deterministic=deterministic, dry_run=dry_run, show_progress=show_progress, say=say)


@dataclass
class _Member:
    """One variant of a pass: its run folder, decoder config, report and seed states."""

    run: RunDir
    cfg: DecoderConfig
    report: TrainReport
    states: list[SeedState] = field(default_factory=list)


def _train(store_path: str | Path, runs: list[tuple[Variant, RunDir]], out: RunDir, *, encoder_key: str | None,
           seeds: tuple[int, ...], epochs: int, data: DataOptions, optimisation: Optimisation, loss: LossOptions,
           device: str, resume: bool, deterministic: bool | None, dry_run: bool, show_progress: bool,
           say: Callable[[str], object] | None) -> list[TrainReport]:
    """The pass behind :func:`train` and :func:`train_variants`; ``out`` names the pass in messages."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise EmbedstoreError(f"--seeds {list(seeds)}: give one or more distinct seeds")
    if epochs < 1:
        raise EmbedstoreError(f"--epochs {epochs}: must be >= 1")
    store = open_store(store_path, mode="r")
    if not dry_run:
        for _, run in runs:
            _check_run_folder(run, resume)
    dev = resolve_device(device)
    read = union_levels([v for v, _ in runs])
    train_data, val_data = _loaders(store, encoder_key, read, data, dev, show_progress and not dry_run)
    if say is not None and not dry_run and (train_data.n_missing or val_data.n_missing):
        say(f"{store.location}: features/{train_data.key} is partly extracted: training on the committed tiles, "
            f"{train_data.n_missing} '{data.split_train}' and {val_data.n_missing} '{data.split_val}' tiles missing")
    members = []
    for variant, run in runs:
        cfg = DecoderConfig(preset=variant.preset, level_dims=tuple(s[0] for s in train_data.level_shapes),
                            level_grids=tuple(s[1] for s in train_data.level_shapes), n_types=train_data.n_types,
                            tile_size=store.tile_size, levels=variant.levels)
        report = TrainReport(run_dir=None if dry_run else run.path, parameters=count_parameters(build_decoder(cfg)),
                             decoder=cfg.to_dict(), train_tiles=train_data.n_tiles, val_tiles=val_data.n_tiles,
                             missing_tiles=train_data.n_missing + val_data.n_missing, dry_run=dry_run,
                             variant=variant.name)
        members.append(_Member(run, cfg, report))
    if dry_run:
        return [m.report for m in members]

    for m in members:
        config = _run_config(store, train_data, val_data, m.cfg, seeds, epochs, data, optimisation, loss, dev)
        _write_config(m.run, config, resume)
    with deterministic_algorithms(dev.type == "cpu" if deterministic is None else deterministic):
        for m in members:
            m.states = [build_seed(seed, m.cfg, m.run, dev, optimisation) for seed in seeds]
        position = _restore(members, out) if resume else (0, 0)
        _fit(members, train_data, val_data, loss, optimisation, out, position, epochs, dev, show_progress)
    return [m.report for m in members]


# --- setup --------------------------------------------------------------------------------------------


def _loaders(store: Store, encoder_key: str | None, levels: tuple[int, ...], data: DataOptions,
             dev: torch.device, show_progress: bool) -> tuple[Loader, Loader]:
    """The shuffled, augmented training loader and the validation loader in store order, view 0."""
    prefetch = 0 if dev.type == "cpu" else 2  # on CPU the decoder uses every core; a reader thread only slows it
    common = dict(levels=levels, batch_size=data.batch_size, seed=data.data_seed, ram_cache=data.ram_cache,
                  require_complete=data.require_complete, prefetch=prefetch, show_progress=show_progress)
    train_data = Loader(store, data.split_train, encoder_key=encoder_key, shuffle=True, augment=True, **common)
    val_data = Loader(store, data.split_val, encoder_key=train_data.key, shuffle=False, augment=False, **common)
    return train_data, val_data


def _run_config(store: Store, train_data: Loader, val_data: Loader, cfg: DecoderConfig, seeds: tuple[int, ...],
                epochs: int, data: DataOptions, optimisation: Optimisation, loss: LossOptions,
                dev: torch.device) -> RunConfig:
    location = str(Path(store.location).resolve()) if "://" not in store.location else store.location
    return RunConfig(
        store=location, encoder_key=train_data.key, encoder_fingerprint=train_data.group.attrs.get("fingerprint"),
        encoder=train_data.group.attrs.get("encoder"), decoder=cfg.to_dict(), dataset=store.dataset,
        seeds=list(seeds), data_seed=data.data_seed, split_train=data.split_train, split_val=data.split_val,
        train_tiles=train_data.n_tiles, val_tiles=val_data.n_tiles, train_data=describe(train_data),
        val_data=describe(val_data), epochs=epochs, batch_size=data.batch_size, **asdict(optimisation),
        loss_weights=asdict(loss.weights), msge_maps=loss.msge_maps, device=str(dev), embedstore=__version__,
    )


def _check_run_folder(run: RunDir, resume: bool) -> None:
    """A new run needs a folder without a run in it; a resumed one needs its config."""
    if resume and not run.is_run():
        raise EmbedstoreError(f"{run.path}: no run to resume (no {run.config_path.name}); drop --resume to start one")
    if not resume and run.is_run():
        raise EmbedstoreError(f"{run.path}: already holds a run; pass --resume to continue it or choose another --out")


def _write_config(run: RunDir, config: RunConfig, resume: bool) -> None:
    """Write the config of a new run, or check that a resumed run's config is compatible (and update it)."""
    if resume:
        diff = config.differences(run.read_config())
        if diff:
            raise EmbedstoreError(f"{run.path}: cannot resume: the checkpoint was trained with a different "
                                  f"{', '.join(diff)}; start a new run with another --out")
    run.write_config(config)


def _restore(members: list[_Member], out: RunDir) -> Position:
    """Continue from the seeds' common last checkpoint, dropping log rows of epochs it did not finish."""
    epoch, done = restore_seeds([s for m in members for s in m.states], out)
    for m in members:
        MetricsLog(m.run).truncate(epoch)
    return epoch, done


# --- the loop -----------------------------------------------------------------------------------------


def _fit(members: list[_Member], train_data: Loader, val_data: Loader, loss: LossOptions, hyper: Optimisation,
         out: RunDir, position: Position, epochs: int, dev: torch.device, show_progress: bool) -> None:
    """The epoch loop from ``position`` = (epoch, batches done); fills every member's report."""
    start_epoch, start_batch = position
    states = [s for m in members for s in m.states]
    logs = {m.run: MetricsLog(m.run) for m in members}
    status = {"text": ""}
    n_batches = len(train_data)
    total = max(0, (epochs - start_epoch) * train_data.n_tiles - start_batch * train_data.batch_size)
    last = members[0].run.checkpoint_pattern("last") if len(members) == 1 else str(out.path / "*" / "seed_*" /
                                                                                   "last.safetensors")
    resume_hint = f"continue with --resume --out {out.path}"
    t_run = time.perf_counter()
    seen = 0
    with sigint_flag() as interrupted, \
            progress_bar(f"train {out.name}", total=total, unit="tiles", enabled=show_progress,
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
                    levels = pick_levels(train_data.levels, batch.levels, s.model.cfg.levels)
                    s.add_train_terms(len(batch), train_step(s.model, s.optimizer, batch, loss,
                                                             clip_norm=hyper.clip_norm, levels=levels))
                tiles += len(batch)
                advance(len(batch))
                status["text"] = f"epoch {epoch + 1}/{epochs} loss {active[0].train_mean('loss'):.4f}"
                if interrupted["set"]:
                    _save_last(states, epoch, b + 1)
                    _finish(members)
                    raise TrainInterrupted(f"interrupted; saved {last} at epoch {epoch + 1}, batch "
                                           f"{b + 1}/{n_batches}; {resume_hint}")
            seconds = time.perf_counter() - t0
            seen += tiles
            vals = validate([s.model for s in active], val_data, loss, dev)
            rows: dict[RunDir, list[dict[str, Any]]] = {m.run: [] for m in members}
            for s, val in zip(active, vals):
                rows[s.run].append(epoch_row(epoch, s.seed, s.train_means(), val, s.lr(), tiles, seconds))
                s.end_epoch(epoch, val, hyper.stop_patience)
            head = next(r[0] for r in rows.values() if r)
            status["text"] = (f"epoch {epoch + 1}/{epochs} val loss {head['val_loss']:.4f} "
                              f"dir MAE {head['val_direction_mae']:.3f} acc {head['val_accuracy']:.3f}")
            for run, logged in rows.items():  # before the checkpoint: a resume drops rows of unfinished epochs
                if logged:
                    logs[run].append(logged)
            _save_last(states, epoch + 1, 0)
            if interrupted["set"]:
                _finish(members)
                raise TrainInterrupted(f"interrupted; saved {last} after epoch {epoch + 1}; {resume_hint}")
    seconds = time.perf_counter() - t_run
    for m, results in zip(members, _finish(members)):
        m.report.seconds = seconds
        m.report.tiles_per_s = seen / seconds if seconds else 0.0
        m.report.epochs = max((int(r["epoch"]) + 1 for r in logs[m.run].rows()), default=0)
        m.report.seeds = results


def _save_last(states: list[SeedState], epoch: int, batches_done: int) -> None:
    for s in states:
        s.save_last(epoch, batches_done)


def _finish(members: list[_Member]) -> list[list[SeedResult]]:
    """Load each seed's best weights back, draw each variant's curves and summarise its seeds."""
    summaries = []
    for m in members:
        rows = MetricsLog(m.run).rows()
        results = []
        for s in m.states:
            s.load_best()
            results.append(SeedResult(
                seed=s.seed, best_epoch=s.best_epoch, best_val_loss=s.best_val,
                val_direction_mae=s.best_metrics.get("val_direction_mae", math.nan),
                val_accuracy=s.best_metrics.get("val_accuracy", math.nan),
                epochs_run=sum(int(r["seed"]) == s.seed for r in rows), stopped_early=s.stopped, best=s.best,
                last=s.last))
        if rows:
            plot_curves(rows, m.run.curves)
        summaries.append(results)
    return summaries
