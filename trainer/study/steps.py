"""The steps of a study and how each one knows, from its outputs, whether it is done.

The order is extract(dataset, encoder) -> train(dataset, encoder) -> evaluate(run) -> compare(dataset);
the baseline (levels none) trains once per dataset. A step is done when every step it depends on is done
and its own outputs are there with the fingerprint of its inputs:

- extract: the store itself is the record (as for ``embed extract``): the dataset ingested with the plan's
  options and tiling, and ``features/<key>`` written by the same encoder and weights, views and storage
  dtype, with every ``done`` marker set. Its token is the group's fingerprint and creation time.
- train, evaluate, compare: a marker ``<out>/steps/<step id>.json`` written after the outputs (temporary
  name, then rename) holds the step's fingerprint: a hash of its settings and of the tokens of the steps
  it depends on, so re-extracted features retrain, a retrained run re-evaluates, and changed seeds,
  epochs or weights make the steps that read them pending again. The outputs must still exist (each seed's
  ``best`` checkpoint, ``eval_<split>/metrics.json``, the table files).

A train step that a kill interrupted (marker ``started`` with the same fingerprint and every seed's ``last``
checkpoint written) resumes; a run folder with other settings is replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from embedstore.errors import EmbedstoreError
from embedstore.trainer.fit.variants import Variant
from embedstore.trainer.run_folder import RunDir
from embedstore.trainer.study.plan import BASELINE, DatasetPlan, EncoderPlan, StudyPlan, encoder_store

Say = Callable[[str], object]

STEPS_FOLDER = "steps"
RUNS_FOLDER = "runs"
TABLES_FOLDER = "tables"


def fingerprint(inputs: Any) -> str:
    """``sha256:<hex>`` of the inputs as canonical JSON: what a marker must match to count as done."""
    text = json.dumps(inputs, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class Markers:
    """The study's step markers: ``<out>/steps/<step id>.json``, each written whole (temp file + rename)."""

    def __init__(self, out: Path) -> None:
        self.folder = out / STEPS_FOLDER

    def path(self, step_id: str) -> Path:
        return self.folder / f"{step_id}.json"

    def read(self, step_id: str) -> dict[str, Any] | None:
        """The marker's content, or None when absent or unreadable (a half-written one is never renamed in)."""
        try:
            return dict(json.loads(self.path(step_id).read_text()))
        except (OSError, json.JSONDecodeError, TypeError, ValueError):
            return None

    def write(self, step_id: str, print_: str, state: str, **extra: Any) -> dict[str, Any]:
        """Record ``state`` ("started" / "finished") for ``print_``; a finished marker gets a fresh token."""
        path = self.path(step_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"fingerprint": print_, "state": state, "token": uuid.uuid4().hex,
                  "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)
        return record

    def finished(self, step_id: str, print_: str) -> dict[str, Any] | None:
        """The marker when it says finished with this fingerprint, else None."""
        record = self.read(step_id)
        if record and record.get("state") == "finished" and record.get("fingerprint") == print_:
            return record
        return None


@dataclass
class Context:
    """What every step reads: the plan, the markers, and how to talk and show progress."""

    plan: StudyPlan
    say: Say
    show_progress: bool
    markers: Markers = field(init=False)
    _hashes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.markers = Markers(self.plan.out)

    def weights_fingerprint(self, encoder: EncoderPlan) -> str | None:
        """The feature-group fingerprint these weights give: ``random:<seed>``, a file's sha256 (hashed
        once per study run), or None for hub weights (known only after download; matched by source)."""
        if encoder.weights == "random":
            return f"random:{encoder.seed}"
        if encoder.weights == "hub":
            return None
        if encoder.weights not in self._hashes:
            from embedstore.encoders.weights import file_sha256

            self._hashes[encoder.weights] = file_sha256(Path(encoder.weights))
        return self._hashes[encoder.weights]


@dataclass
class Status:
    """Whether a step is done, and a few words why not (or what is there)."""

    done: bool
    detail: str = ""


class Step:
    """One unit of study work: an id, what it depends on, its done-check and its run."""

    kind = ""
    after: tuple[Step, ...] = ()

    @property
    def id(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        """One line for the plan listing."""
        raise NotImplementedError

    def own_status(self, ctx: Context) -> Status:
        raise NotImplementedError

    def token(self, ctx: Context) -> str:
        """What identifies this step's finished outputs (changes whenever they are rewritten)."""
        raise NotImplementedError

    def run(self, ctx: Context) -> None:
        raise NotImplementedError

    def status(self, ctx: Context) -> Status:
        """Done when every step it depends on is done and its own outputs match its inputs."""
        for up in self.after:
            if not up.status(ctx).done:
                return Status(False, f"after {up.id}")
        return self.own_status(ctx)


# --- extract ---------------------------------------------------------------------------------------------


def dataset_signature(dataset: DatasetPlan) -> dict[str, Any]:
    """The ingest options a store records (``dataset.options`` attribute), as ``embed extract`` writes them."""
    from embedstore.datasets import dataset_options
    from embedstore.store.ingest import recorded_options

    stride = dataset.stride if dataset.stride is not None else dataset.tile_size
    return recorded_options({**dataset_options(dataset.adapter, dataset.options), "stride": stride})


@dataclass(eq=False)
class ExtractStep(Step):
    """Ingest the dataset (once per store) and write one encoder's features into it."""

    dataset: DatasetPlan
    encoder: EncoderPlan
    kind = "extract"

    @property
    def id(self) -> str:
        return f"extract/{self.dataset.name}/{self.encoder.id}"

    @property
    def store(self) -> Path:
        return encoder_store(self.dataset, self.encoder)

    def describe(self) -> str:
        return (f"extract {self.dataset.name} ({self.dataset.adapter}) with {self.encoder.label} "
                f"(weights {self.encoder.weights}) -> {self.store}")

    def storage_dtype(self, ctx: Context) -> str:
        return "float32" if ctx.plan.settings.dtype == "fp32" else "float16"

    def _group_attrs(self, ctx: Context) -> tuple[dict[str, Any] | None, str]:
        """The feature group's attributes when the store holds this dataset and encoder, else why not."""
        from embedstore.store import open_store

        if not self.store.exists():
            return None, "no store yet"
        try:
            store = open_store(self.store, mode="r")
        except EmbedstoreError as err:
            return None, f"unreadable store ({err})"
        if not store.ingest_complete:
            return None, "ingest not finished"
        if store.tile_size != self.dataset.tile_size or store.dataset.get("options") != dataset_signature(self.dataset):
            return None, "store holds the dataset with other options or tiling"
        if self.encoder.key not in store.feature_keys():
            return None, f"no features/{self.encoder.key}"
        group = store.features(self.encoder.key)
        attrs = dict(group.attrs)
        if not self._same_encoder(ctx, attrs):
            return None, f"features/{self.encoder.key} holds other weights, settings or storage"
        import numpy as np

        done = np.asarray(group["done"][:]).all(axis=1)
        if not done.all():
            return None, f"{int(done.sum())}/{done.size} tiles extracted"
        return attrs, f"{done.size} tiles"

    def _same_encoder(self, ctx: Context, attrs: dict[str, Any]) -> bool:
        from embedstore.encoders import get_spec
        from embedstore.store.codecs import codec_name

        spec = json.loads(json.dumps(get_spec(self.encoder.name).to_dict()))
        expected = ctx.weights_fingerprint(self.encoder)
        weights_ok = (str(attrs.get("weights_source", "")).startswith("hf-hub:") if expected is None
                      else attrs.get("fingerprint") == expected)
        return (attrs.get("encoder") == spec and weights_ok and attrs.get("views") == ctx.plan.settings.views
                and attrs.get("tile_size") == self.dataset.tile_size
                and attrs.get("storage_dtype") == ("int8" if self.encoder.quantize == "int8" else self.storage_dtype(ctx))
                and codec_name(attrs.get("codec")) == self.encoder.codec
                and (attrs.get("transform") or {}).get("pca") == self.encoder.pca
                and (attrs.get("transform") or {}).get("quantize") == self.encoder.quantize)

    def own_status(self, ctx: Context) -> Status:
        attrs, detail = self._group_attrs(ctx)
        return Status(attrs is not None, detail)

    def token(self, ctx: Context) -> str:
        attrs, detail = self._group_attrs(ctx)
        if attrs is None:
            raise EmbedstoreError(f"{self.id}: not done ({detail})")
        return f"{attrs.get('fingerprint')}@{attrs.get('created')}"

    def run(self, ctx: Context) -> None:
        from embedstore.extract.pipeline import extract_into_store

        s = ctx.plan.settings
        self.store.parent.mkdir(parents=True, exist_ok=True)
        report = extract_into_store(
            self.store, self.encoder.name, dataset=self.dataset.adapter, data_dir=self.dataset.data_dir,
            options=dict(self.dataset.options), tile_size=self.dataset.tile_size, stride=self.dataset.stride,
            weights=self.encoder.weights, seed=self.encoder.seed, batch_size=s.batch_size, device=s.device,
            dtype=s.dtype, views=s.views, codec=self.encoder.codec, pca=self.encoder.pca,
            quantize=self.encoder.quantize, show_progress=ctx.show_progress)
        ctx.say(f"{self.id}: wrote {report.tiles_written} tiles, {report.tiles_skipped} already committed")


# --- train -----------------------------------------------------------------------------------------------


def train_settings(plan: StudyPlan) -> dict[str, Any]:
    """The plan settings a trained decoder depends on (part of every train fingerprint)."""
    s = plan.settings
    return {"seeds": list(s.seeds), "epochs": s.epochs, "batch_size": s.batch_size_train, "lr": s.lr,
            "lr_patience": s.lr_patience, "stop_patience": s.stop_patience, "data_seed": s.data_seed,
            "split_train": s.split_train, "split_val": s.split_val}


@dataclass(eq=False)
class TrainStep(Step):
    """Train the plan's variants on one dataset's features of one encoder, every seed, in one pass.

    ``encoder`` None is the baseline: it reads no level, so it trains once per dataset, on the feature group
    of ``group`` (the loader needs one to know the committed tiles), and its fingerprint ignores that group.
    """

    dataset: DatasetPlan
    encoder: EncoderPlan | None
    group: EncoderPlan
    variants: tuple[Variant, ...]
    after: tuple[Step, ...] = ()
    kind = "train"

    @property
    def folder_name(self) -> str:
        return self.encoder.id if self.encoder is not None else BASELINE

    @property
    def id(self) -> str:
        return f"train/{self.dataset.name}/{self.folder_name}"

    @property
    def encoder_label(self) -> str:
        return self.encoder.label if self.encoder is not None else BASELINE

    def out(self, ctx: Context) -> Path:
        return ctx.plan.out / RUNS_FOLDER / self.dataset.name / self.folder_name

    def run_dir(self, ctx: Context, variant: Variant) -> RunDir:
        return RunDir(self.out(ctx) / variant.name)

    def variant_id(self, variant: Variant) -> str:
        return f"{self.id}/{variant.name}"

    def describe(self) -> str:
        names = ", ".join(v.name for v in self.variants)
        return f"train {self.dataset.name} x {self.encoder_label}: {names}"

    def variant_print(self, ctx: Context, variant: Variant) -> str:
        if self.encoder is not None:
            upstream: Any = [up.token(ctx) for up in self.after]
        else:  # the baseline reads images only: the dataset's tiles, whichever encoder's group lists them
            upstream = {"adapter": self.dataset.adapter, "options": dataset_signature(self.dataset),
                        "tile_size": self.dataset.tile_size}
        return fingerprint({"upstream": upstream, "variant": [variant.name, variant.preset, list(variant.levels)],
                            "settings": train_settings(ctx.plan)})

    def variant_done(self, ctx: Context, variant: Variant) -> bool:
        run = self.run_dir(ctx, variant)
        return (ctx.markers.finished(self.variant_id(variant), self.variant_print(ctx, variant)) is not None
                and run.is_run()
                and all(run.checkpoint(seed).is_file() for seed in ctx.plan.settings.seeds))

    def own_status(self, ctx: Context) -> Status:
        pending = [v.name for v in self.variants if not self.variant_done(ctx, v)]
        if pending:
            return Status(False, "to train: " + ", ".join(pending))
        return Status(True, f"{len(self.variants)} variant(s) x {len(ctx.plan.settings.seeds)} seeds")

    def token(self, ctx: Context) -> str:
        return ",".join(self.variant_token(ctx, v) for v in self.variants)

    def variant_token(self, ctx: Context, variant: Variant) -> str:
        record = ctx.markers.finished(self.variant_id(variant), self.variant_print(ctx, variant))
        if record is None:
            raise EmbedstoreError(f"{self.variant_id(variant)}: not trained")
        return str(record["token"])

    def _resumable(self, ctx: Context, variant: Variant, print_: str) -> bool:
        """A run a kill interrupted: started with these settings, every seed's ``last`` checkpoint written."""
        record = ctx.markers.read(self.variant_id(variant))
        run = self.run_dir(ctx, variant)
        return (record is not None and record.get("state") == "started" and record.get("fingerprint") == print_
                and run.is_run() and all(run.checkpoint(s, "last").is_file() for s in ctx.plan.settings.seeds))

    def run(self, ctx: Context) -> None:
        from embedstore.trainer.fit.options import DataOptions, Optimisation
        from embedstore.trainer.fit.train import train_variants

        s = ctx.plan.settings
        pending = [v for v in self.variants if not self.variant_done(ctx, v)]
        prints = {v.name: self.variant_print(ctx, v) for v in pending}
        resume = [v for v in pending if self._resumable(ctx, v, prints[v.name])]
        fresh = [v for v in pending if v not in resume]
        for v in fresh:
            run = self.run_dir(ctx, v)
            if run.path.exists():
                ctx.say(f"{run.path}: trained with other settings; replacing it")
                shutil.rmtree(run.path)
            ctx.markers.write(self.variant_id(v), prints[v.name], "started")
        common = dict(encoder_key=self.group.key, seeds=s.seeds, epochs=s.epochs,
                      data=DataOptions(split_train=s.split_train, split_val=s.split_val, data_seed=s.data_seed,
                                       batch_size=s.batch_size_train),
                      optimisation=Optimisation(lr=s.lr, lr_patience=s.lr_patience, stop_patience=s.stop_patience),
                      device=s.device, show_progress=ctx.show_progress)
        for batch, again in ((resume, True), (fresh, False)):
            if not batch:
                continue
            ctx.say(f"{self.id}: {'resuming' if again else 'training'} {', '.join(v.name for v in batch)}")
            train_variants(encoder_store(self.dataset, self.group), self.out(ctx), batch, resume=again, **common)
            for v in batch:
                ctx.markers.write(self.variant_id(v), prints[v.name], "finished")


# --- evaluate --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class EvaluateStep(Step):
    """Score one trained variant's seeds on the test split with the plan's post-processing."""

    train: TrainStep
    variant: Variant
    kind = "evaluate"

    def __post_init__(self) -> None:
        self.after = (self.train,)

    @property
    def id(self) -> str:
        return f"evaluate/{self.train.dataset.name}/{self.train.folder_name}/{self.variant.name}"

    def run_dir(self, ctx: Context) -> RunDir:
        return self.train.run_dir(ctx, self.variant)

    def describe(self) -> str:
        return f"evaluate {self.train.dataset.name} x {self.train.encoder_label} x {self.variant.name}"

    def print_(self, ctx: Context) -> str:
        s = ctx.plan.settings
        return fingerprint({"run": self.train.variant_token(ctx, self.variant), "split": s.split_test,
                            "postprocess": s.postprocess})

    def own_status(self, ctx: Context) -> Status:
        done = (self.run_dir(ctx).eval_metrics(ctx.plan.settings.split_test).is_file()
                and ctx.markers.finished(self.id, self.print_(ctx)) is not None)
        return Status(done, "" if done else "not evaluated with these settings")

    def token(self, ctx: Context) -> str:
        record = ctx.markers.finished(self.id, self.print_(ctx))
        if record is None:
            raise EmbedstoreError(f"{self.id}: not evaluated")
        return str(record["token"])

    def run(self, ctx: Context) -> None:
        from embedstore.trainer.evaluate import evaluate

        s = ctx.plan.settings
        print_ = self.print_(ctx)
        evaluate(self.run_dir(ctx).path, split=s.split_test, postprocess=s.postprocess, workers=s.eval_workers,
                 device=s.device, show_progress=ctx.show_progress)
        ctx.markers.write(self.id, print_, "finished")


# --- compare ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class CompareStep(Step):
    """The dataset's tables: comparison (mean ± sd, best marked) and the paired gap to the baseline."""

    dataset: DatasetPlan
    evaluations: tuple[EvaluateStep, ...]
    kind = "compare"

    def __post_init__(self) -> None:
        self.after = self.evaluations

    @property
    def id(self) -> str:
        return f"compare/{self.dataset.name}"

    def folder(self, ctx: Context) -> Path:
        return ctx.plan.out / TABLES_FOLDER / self.dataset.name

    def describe(self) -> str:
        return f"compare {self.dataset.name}: {len(self.evaluations)} runs -> tables"

    def print_(self, ctx: Context) -> str:
        s = ctx.plan.settings
        return fingerprint({"evaluations": [e.token(ctx) for e in self.evaluations], "level": s.level,
                            "split": s.split_test})

    def own_status(self, ctx: Context) -> Status:
        from embedstore.trainer.study.tables import TABLE_FILES

        record = ctx.markers.finished(self.id, self.print_(ctx))
        done = record is not None and all((self.folder(ctx) / name).is_file() for name in TABLE_FILES)
        return Status(done, "" if done else "tables not written for these runs")

    def token(self, ctx: Context) -> str:
        record = ctx.markers.finished(self.id, self.print_(ctx))
        if record is None:
            raise EmbedstoreError(f"{self.id}: not compared")
        return str(record["token"])

    def run(self, ctx: Context) -> None:
        from embedstore.trainer.study.tables import RunEntry, write_dataset_tables

        s = ctx.plan.settings
        print_ = self.print_(ctx)
        entries = [RunEntry(path=e.run_dir(ctx).path, encoder=e.train.encoder_label, variant=e.variant.name,
                            baseline=e.train.encoder is None) for e in self.evaluations]
        files = write_dataset_tables(entries, self.folder(ctx), split=s.split_test, level=s.level,
                                     title=self.dataset.name)
        ctx.markers.write(self.id, print_, "finished", files={k: str(v) for k, v in files.items()})
        ctx.say(f"{self.id}: wrote " + ", ".join(str(p) for p in files.values()))


# --- the step list ---------------------------------------------------------------------------------------


def build_steps(plan: StudyPlan) -> list[Step]:
    """Every step of the plan in running order. Per dataset: extract each encoder; train and evaluate the
    first encoder, then the baseline, then the other encoders; compare. Each run is scored as soon as it is
    trained, so a long study that is stopped leaves scored runs, with the floor among the first."""
    steps: list[Step] = []
    for dataset in plan.datasets:
        extracts = [ExtractStep(dataset, e) for e in plan.encoders]
        trains = [TrainStep(dataset, e, e, plan.variants, after=(x,)) for e, x in zip(plan.encoders, extracts)]
        trains.insert(1, TrainStep(dataset, None, plan.encoders[0], (plan.baseline,), after=(extracts[0],)))
        scored = [(t, [EvaluateStep(t, v) for v in t.variants]) for t in trains]
        rows = scored[:1] + scored[2:] + scored[1:2]  # table rows: the encoders in plan order, then the baseline
        evaluations = [e for _, es in rows for e in es]
        steps += [*extracts, *(s for t, es in scored for s in (t, *es)), CompareStep(dataset, tuple(evaluations))]
    return steps
