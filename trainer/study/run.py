"""`embed study PLAN.toml`: run a whole study, doing only the steps whose outputs are missing or stale.

Order of work: (1) the plan is read and checked (:func:`~embedstore.trainer.study.plan.load_plan`); (2) each
step's status is read from its outputs (:mod:`.steps`); (3) before anything is written, every encoder that
still has features to extract with ``weights = "hub"`` is fetched or found in the cache, so a gated model
without access stops the study with the one-line access message, not halfway through; (4) the pending
steps run in order. A dry run stops after (2): it lists every step as done or pending, with the estimated
store sizes, and writes nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedstore.errors import EmbedstoreError
from embedstore.trainer.study.plan import DatasetPlan, EncoderPlan, StudyPlan, encoder_store
from embedstore.trainer.study.steps import CompareStep, Context, ExtractStep, Step, build_steps

Say = Callable[[str], object]


@dataclass
class StepRecord:
    """One step of a study run: its id, kind, what happened ("done" before, "ran" now, "pending" in a dry
    run) and a few words of detail."""

    id: str
    kind: str
    state: str
    detail: str = ""
    description: str = ""


@dataclass
class SizeEstimate:
    """Estimated store size of one dataset x encoder: images + labels and the features, uncompressed.

    ``tiles`` is None when the dataset cannot be counted before ingest; ``on_disk`` is the store's
    current size in bytes (0 when it does not exist yet).
    """

    dataset: str
    encoder: str
    tiles: int | None
    views: int
    tile_bytes: int | None
    feature_bytes: int | None
    on_disk: int


@dataclass
class StudyReport:
    """What :func:`run_study` did (or, in a dry run, would do), and where the tables are."""

    steps: list[StepRecord] = field(default_factory=list)
    sizes: list[SizeEstimate] = field(default_factory=list)
    tables: dict[str, dict[str, Path]] = field(default_factory=dict)
    dry_run: bool = False

    def count(self, state: str) -> int:
        return sum(s.state == state for s in self.steps)


# --- sizes -----------------------------------------------------------------------------------------------


def level_shapes(encoder: str, tile_size: int) -> list[tuple[int, int, int]]:
    """(C, h, w) per level for square tiles of ``tile_size``, from the registry's dims and 256 px grids.

    The grids scale with the network input side (``EncoderSpec.input_side``), which is exact for ViTs and
    the stride-based CNN / Swin stages up to rounding; no network is built.
    """
    from embedstore.encoders import get_spec

    spec = get_spec(encoder)
    scale = spec.input_side(tile_size) / spec.input_side(256)
    return [(c, max(1, math.ceil(g * scale)), max(1, math.ceil(g * scale))) for c, g in zip(spec.dims, spec.grids)]


def count_tiles(dataset: DatasetPlan) -> int | None:
    """Tiles of the dataset: from its store when ingested, else from the adapter (it indexes image headers
    only); None when neither works."""
    from embedstore.datasets import get_dataset
    from embedstore.store import open_store

    if dataset.store.exists():
        try:
            store = open_store(dataset.store, mode="r")
            if store.ingest_complete:
                return store.n_samples
        except EmbedstoreError:
            pass
    try:
        return len(get_dataset(dataset.adapter, dataset.data_dir, tile_size=dataset.tile_size,
                               stride=dataset.stride, **dataset.options))
    except EmbedstoreError:
        return None


def estimate_sizes(plan: StudyPlan) -> list[SizeEstimate]:
    """Uncompressed store sizes: tiles x (RGB + int32 instance + uint8 class) and tiles x views x the
    encoder's levels (C = min(pca, C) under PCA) x the storage item size (2 bytes for float16, 4 for fp32,
    1 for int8)."""
    from embedstore.extract.compact import stored_shapes
    from embedstore.store import store_bytes

    views = plan.settings.views
    out = []
    for dataset in plan.datasets:
        tiles = count_tiles(dataset)
        side = dataset.tile_size
        for encoder in plan.encoders:
            store = encoder_store(dataset, encoder)
            on_disk = store_bytes(store) if store.exists() else 0
            itemsize = 1 if encoder.quantize == "int8" else 4 if plan.settings.dtype == "fp32" else 2
            shapes = stored_shapes(level_shapes(encoder.name, side), encoder.pca)
            per_tile = sum(c * h * w for c, h, w in shapes) * views * itemsize
            out.append(SizeEstimate(dataset=dataset.name, encoder=encoder.label, tiles=tiles, views=views,
                                    tile_bytes=None if tiles is None else tiles * side * side * 8,
                                    feature_bytes=None if tiles is None else tiles * per_tile, on_disk=on_disk))
    return out


def format_bytes(n: int | None) -> str:
    if n is None:
        return "unknown until ingest"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# --- weights access --------------------------------------------------------------------------------------


@contextmanager
def _offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 for the block: a dry run looks in the cache only and never downloads."""
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = before


def check_weights(encoders: list[EncoderPlan], *, cache_only: bool = False) -> dict[str, str]:
    """Fetch (or find in the cache) the hub weights of ``encoders``: the access check of a study.

    Returns the weights source per encoder name. With ``cache_only`` nothing is downloaded and a missing
    file is reported as its one-line message instead of raised.

    Raises
    ------
    EmbedstoreError : (unless ``cache_only``) the one-line access message of the first encoder whose weights
        cannot be had: a gated repo without access, offline with an empty cache, no published weights.
    """
    from embedstore.encoders import get_spec
    from embedstore.encoders.weights import fetch_hub_weights

    found = {}
    for encoder in encoders:
        if encoder.weights != "hub":
            continue
        try:
            if cache_only:
                with _offline():
                    found[encoder.name] = fetch_hub_weights(get_spec(encoder.name))[1]
            else:
                found[encoder.name] = fetch_hub_weights(get_spec(encoder.name))[1]
        except EmbedstoreError as err:
            if not cache_only:
                raise
            found[encoder.name] = f"not in the cache: {err}"
    return found


# --- the run ---------------------------------------------------------------------------------------------


def run_study(plan: StudyPlan, *, dry_run: bool = False, say: Say | None = print,
              show_progress: bool = True) -> StudyReport:
    """Extract, train, evaluate and compare what the plan asks for and is not done yet.

    Parameters
    ----------
    plan : a checked plan (:func:`~embedstore.trainer.study.plan.load_plan`).
    dry_run : list the steps (done / pending) and the estimated store sizes; nothing is written or fetched.
    say : receives one line per step (None: silent).
    show_progress : progress bars of extraction, training and evaluation.

    Returns
    -------
    A :class:`StudyReport`: one record per step ("done", "ran" or, in a dry run, "pending"), the size
    estimates (dry run) and the table files per dataset.

    Raises
    ------
    EmbedstoreError : a gated or missing encoder (before any work), or any step's user error.
    """
    tell: Say = say if say is not None else (lambda _: None)
    ctx = Context(plan=plan, say=tell, show_progress=show_progress)
    steps = build_steps(plan)
    report = StudyReport(dry_run=dry_run)
    statuses = {s.id: s.status(ctx) for s in steps}
    if dry_run:
        for s in steps:
            state = "done" if statuses[s.id].done else "pending"
            report.steps.append(StepRecord(s.id, s.kind, state, statuses[s.id].detail, s.describe()))
            tell(f"{'done   ' if state == 'done' else 'pending'} {s.describe()}"
                 + (f" ({statuses[s.id].detail})" if statuses[s.id].detail else ""))
        pending_hub = _pending_encoders(steps, statuses)
        for name, source in check_weights(pending_hub, cache_only=True).items():
            tell(f"weights {name}: {source}")
        report.sizes = estimate_sizes(plan)
        for size in report.sizes:
            tell(f"store {size.dataset} x {size.encoder}: {size.tiles if size.tiles is not None else '?'} tiles, "
                 f"images+labels {format_bytes(size.tile_bytes)}, features {format_bytes(size.feature_bytes)} "
                 f"(uncompressed, {size.views} view(s)); on disk now {format_bytes(size.on_disk)}")
        tell(f"{report.count('done')} steps done, {report.count('pending')} pending")
        return report

    check_weights(_pending_encoders(steps, statuses))  # the access check, before any work
    for s in steps:
        status = s.status(ctx)
        if status.done:
            report.steps.append(StepRecord(s.id, s.kind, "done", status.detail, s.describe()))
            continue
        tell(f"[bold]{s.describe()}[/bold]" + (f" ({status.detail})" if status.detail else ""))
        s.run(ctx)
        after = s.status(ctx)
        if not after.done:  # a step that ran must leave outputs that count as done
            raise EmbedstoreError(f"{s.id}: ran but its outputs are incomplete ({after.detail})")
        report.steps.append(StepRecord(s.id, s.kind, "ran", status.detail, s.describe()))
    report.tables = _tables(ctx, steps)
    tell(f"study done: {report.count('ran')} steps ran, {report.count('done')} were already done; "
         f"tables in {plan.out / 'tables'}")
    return report


def _pending_encoders(steps: list[Step], statuses: dict[str, Any]) -> list[EncoderPlan]:
    """Encoders with features still to extract somewhere (their weights are needed), in plan order."""
    seen: dict[str, EncoderPlan] = {}
    for s in steps:
        if isinstance(s, ExtractStep) and not statuses[s.id].done:
            seen.setdefault(s.encoder.name, s.encoder)
    return list(seen.values())


def _tables(ctx: Context, steps: list[Step]) -> dict[str, dict[str, Path]]:
    """The table files of every dataset, from the compare markers."""
    out = {}
    for s in steps:
        if isinstance(s, CompareStep):
            record = ctx.markers.read(s.id) or {}
            out[s.dataset.name] = {k: Path(v) for k, v in dict(record.get("files", {})).items()}
    return out
