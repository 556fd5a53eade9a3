"""The study plan: ``PLAN.toml`` read with :mod:`tomllib` into frozen dataclasses, checked before any work.

A plan names datasets (adapter, data folder, options), encoders (with weights), seeds, decoder variants
and the post-processing; :func:`load_plan` refuses a bad plan in one line that names the key (unknown
adapter, encoder, decoder preset or key, a missing data folder, empty seeds ...). Paths in a plan are
relative to the plan file. The no-encoder baseline (a variant with ``levels = "none"``) is always part of
a study: it is added as ``baseline`` when the plan names none. See docs/study.md for the format.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from embedstore.datasets.registry import ADAPTERS
from embedstore.errors import EmbedstoreError
from embedstore.extract.precision import ComputeDtype
from embedstore.store.codecs import codec_name, codec_record, default_codec, parse_codec
from embedstore.store.features import QUANTIZE
from embedstore.store.zarr_store import feature_key
from embedstore.trainer.fit.variants import Variant, parse_levels
from embedstore.trainer.model.presets import PRESETS
from embedstore.trainer.postprocess.params import VARIANTS as POSTPROCESS_VARIANTS

BASELINE = "baseline"
"""Name of the baseline variant added when a plan names none, and the encoder column of its rows."""

WEIGHTS_KINDS = ("hub", "random")
DTYPES: tuple[str, ...] = get_args(ComputeDtype)


@dataclass(frozen=True)
class Settings:
    """Settings shared by every dataset of a study (the ``[defaults]`` table and top-level ``seeds``).

    Attributes
    ----------
    seeds : decoder seeds, trained together (one pass per dataset and encoder).
    epochs : maximum training epochs (early stopping may end sooner).
    tile_size, stride : tiling of datasets that do not set their own.
    views : cached dihedral views (1 or 8).
    batch_size : images per encoder forward pass (extraction).
    batch_size_train : tiles per training batch.
    device, dtype : where and in which precision encoders and decoders run.
    postprocess : post-processing variant of the evaluation ("cisca", "improved", "nocut").
    split_train, split_val, split_test : the splits trained, validated and evaluated.
    data_seed : seed of the training data order and drawn views.
    lr, lr_patience, stop_patience : optimiser settings (see ``embed train``).
    eval_workers : processes that score in parallel during evaluation (<= 1: in this process).
    level : the tables' level: "auto" (stitched images where every run has them), "tile" or "image".
    """

    seeds: tuple[int, ...]
    epochs: int = 100
    tile_size: int = 256
    stride: int | None = None
    views: int = 1
    batch_size: int = 16
    batch_size_train: int = 4
    device: str = "auto"
    dtype: str = "auto"
    postprocess: str = "cisca"
    split_train: str = "train"
    split_val: str = "val"
    split_test: str = "test"
    data_seed: int = 0
    lr: float = 5e-4
    lr_patience: int = 10
    stop_patience: int = 20
    eval_workers: int = 2
    level: str = "auto"


@dataclass(frozen=True)
class DatasetPlan:
    """One ``[[dataset]]``: its table name, adapter, data folder, adapter options, tiling and store path."""

    name: str
    adapter: str
    data_dir: Path | None
    options: dict[str, Any]
    store: Path
    tile_size: int
    stride: int | None


@dataclass(frozen=True)
class EncoderPlan:
    """One ``[[encoder]]``: a registry name (or ``timm:<model>``), its weights, the seed of random weights
    and how its features are stored (``embed extract --codec / --quantize / --pca``).

    ``weights`` is "hub", "random" or an absolute path to a weights file; ``codec`` is spelt
    ``NAME:LEVEL:SHUFFLE``. An encoder stored other than the default (float16, zstd 3) gets a store of its
    own per dataset (:func:`encoder_store`), so one
    study can set the same encoder's float16, int8 and PCA features side by side.
    """

    name: str
    weights: str
    seed: int = 0
    codec: str = ""
    quantize: str | None = None
    pca: int | None = None

    def __post_init__(self) -> None:
        if not self.codec:  # "": the default of this storage
            object.__setattr__(self, "codec", default_codec(self.quantize))

    @property
    def key(self) -> str:
        """The feature group name in a store (``timm:resnet50`` -> ``timm-resnet50``)."""
        return feature_key(self.name)

    @property
    def storage(self) -> str:
        """"" for default storage, else e.g. ``pca256-int8`` or ``zstd-7-bitshuffle``: names its store and rows."""
        parts = [f"pca{self.pca}"] if self.pca is not None else []
        parts += [self.quantize] if self.quantize is not None else []
        parts += [self.codec.replace(":", "-")] if self.codec != default_codec(self.quantize) else []
        return "-".join(parts)

    @property
    def id(self) -> str:
        """The encoder's name in step ids and run folders: the key, plus the storage when not the default."""
        return f"{self.key}-{self.storage}" if self.storage else self.key

    @property
    def label(self) -> str:
        """The encoder's row name in the tables (``timm:vit_base_patch16_224 int8``)."""
        return f"{self.name} {self.storage}" if self.storage else self.name


def encoder_store(dataset: DatasetPlan, encoder: EncoderPlan) -> Path:
    """Where ``encoder``'s features of ``dataset`` go: the dataset's store, or ``<store>-<storage>.zarr``
    beside it for non-default storage (a store holds one feature group per encoder)."""
    if not encoder.storage:
        return dataset.store
    return dataset.store.with_name(f"{dataset.store.name.removesuffix('.zarr')}-{encoder.storage}.zarr")


@dataclass(frozen=True)
class StudyPlan:
    """A whole study: where it writes, what it extracts, trains, evaluates and compares.

    ``variants`` holds the encoder variants (levels read); ``baseline`` the no-encoder variant, trained
    once per dataset.
    """

    path: Path
    out: Path
    datasets: tuple[DatasetPlan, ...]
    encoders: tuple[EncoderPlan, ...]
    variants: tuple[Variant, ...]
    baseline: Variant
    settings: Settings
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


_TOP = ("out", "stores", "seeds", "defaults", "dataset", "encoder", "variant")
_DATASET = ("name", "adapter", "data_dir", "options", "store", "tile_size", "stride")
_ENCODER = ("name", "weights", "seed", "codec", "quantize", "pca")
_VARIANT = ("name", "levels", "decoder")


class _Reader:
    """Typed access to one plan table; every error names the plan file and the key."""

    def __init__(self, plan: Path, where: str, table: Any, allowed: tuple[str, ...]) -> None:
        self.plan, self.where = plan, where
        if not isinstance(table, dict):
            self.fail(f"{where}: expected a table")
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            self.fail(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(allowed)}")
        self.table = table

    def fail(self, message: str) -> None:
        raise EmbedstoreError(f"{self.plan}: {message}")

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        if name not in self.table:
            if required:
                self.fail(f"{self.key(name)}: missing")
            return default
        value = self.table[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            self.fail(f"{self.key(name)} = {value!r}: expected {' or '.join(k.__name__ for k in kinds)}")
        return value

    def positive(self, name: str, default: int) -> int:
        value = int(self.get(name, int, default))
        if value < 1:
            self.fail(f"{self.key(name)} = {value}: must be >= 1")
        return value

    def choice(self, name: str, choices: tuple[str, ...] | list[str], default: str) -> str:
        value = str(self.get(name, str, default))
        if value not in choices:
            self.fail(f"{self.key(name)} = {value!r}: expected one of {', '.join(choices)}")
        return value


def _seeds(r: _Reader, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        r.fail(f"seeds = {value!r}: expected a list of integers such as [0, 1, 2]")
    if not value:
        r.fail("seeds: empty; give one or more seeds such as [0, 1, 2]")
    if len(set(value)) != len(value):
        r.fail(f"seeds = {value}: seeds must be distinct")
    return tuple(int(s) for s in value)


def _settings(plan: Path, data: dict[str, Any]) -> Settings:
    names = tuple(Settings.__dataclass_fields__)
    r = _Reader(plan, "defaults", data.get("defaults", {}), names)
    top_seeds, default_seeds = data.get("seeds"), r.table.get("seeds")
    if top_seeds is not None and default_seeds is not None:
        r.fail("seeds: give them at the top level or in [defaults], not both")
    seeds = top_seeds if top_seeds is not None else default_seeds
    if seeds is None:
        r.fail("seeds: missing; give the decoder seeds, e.g. seeds = [0, 1, 2]")
    views = r.positive("views", 1)
    if views not in (1, 8):
        r.fail(f"defaults.views = {views}: expected 1 or 8")
    stride = r.get("stride", int)
    return Settings(
        seeds=_seeds(r, seeds), epochs=r.positive("epochs", 100), tile_size=r.positive("tile_size", 256),
        stride=None if stride is None else r.positive("stride", stride), views=views,
        batch_size=r.positive("batch_size", 16), batch_size_train=r.positive("batch_size_train", 4),
        device=str(r.get("device", str, "auto")), dtype=r.choice("dtype", DTYPES, "auto"),
        postprocess=r.choice("postprocess", POSTPROCESS_VARIANTS, "cisca"),
        split_train=str(r.get("split_train", str, "train")), split_val=str(r.get("split_val", str, "val")),
        split_test=str(r.get("split_test", str, "test")), data_seed=int(r.get("data_seed", int, 0)),
        lr=float(r.get("lr", (float, int), 5e-4)), lr_patience=r.positive("lr_patience", 10),
        stop_patience=r.positive("stop_patience", 20), eval_workers=int(r.get("eval_workers", int, 2)),
        level=r.choice("level", ("auto", "tile", "image"), "auto"),
    )


def _path(base: Path, text: str) -> Path:
    """``text`` relative to the plan's folder (``~`` expanded), made absolute."""
    path = Path(text).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def _datasets(plan: Path, tables: Any, stores: Path, settings: Settings) -> tuple[DatasetPlan, ...]:
    if not isinstance(tables, list) or not tables:
        raise EmbedstoreError(f"{plan}: dataset: give at least one [[dataset]] table")
    out = []
    for i, table in enumerate(tables):
        r = _Reader(plan, f"dataset[{i}]", table, _DATASET)
        adapter = r.get("adapter", str, required=True)
        if adapter not in ADAPTERS:
            r.fail(f"dataset[{i}].adapter = {adapter!r}: unknown; valid adapters: {', '.join(ADAPTERS)}")
        name = str(r.get("name", str, adapter))
        r.where = f"dataset[{i}] ({name})"
        data_dir = r.get("data_dir", str)
        if ADAPTERS[adapter].needs_data_dir and data_dir is None:
            r.fail(f"{r.key('data_dir')}: missing; adapter {adapter} reads a data folder")
        folder = None if data_dir is None else _path(plan.parent, data_dir)
        if folder is not None and not folder.is_dir():
            r.fail(f"{r.key('data_dir')} = {data_dir!r}: no such folder ({folder})")
        options = r.get("options", dict, {})
        if not all(isinstance(v, (str, int, float, bool)) for v in options.values()):
            r.fail(f"{r.key('options')}: values must be strings, numbers or booleans")
        store = r.get("store", str)
        stride = r.get("stride", int, settings.stride)
        out.append(DatasetPlan(
            name=name, adapter=adapter, data_dir=folder, options=dict(options),
            store=_path(plan.parent, store) if store else stores / f"{name}.zarr",
            tile_size=r.positive("tile_size", settings.tile_size),
            stride=None if stride is None else r.positive("stride", stride)))
    _distinct(plan, "dataset", [d.name for d in out])
    _distinct(plan, "dataset store", [str(d.store) for d in out])
    return tuple(out)


def _encoders(plan: Path, tables: Any) -> tuple[EncoderPlan, ...]:
    from embedstore.encoders import get_spec  # builds timm: specs on the fly; imported when a plan is read

    if not isinstance(tables, list) or not tables:
        raise EmbedstoreError(f"{plan}: encoder: give at least one [[encoder]] table")
    out = []
    for i, table in enumerate(tables):
        r = _Reader(plan, f"encoder[{i}]", table, _ENCODER)
        name = r.get("name", str, required=True)
        try:
            get_spec(name)
        except EmbedstoreError as err:
            r.fail(f"encoder[{i}].name = {name!r}: {err}")
        weights = str(r.get("weights", str, "hub"))
        if weights not in WEIGHTS_KINDS:
            path = _path(plan.parent, weights)
            if not path.is_file():
                r.fail(f"encoder[{i}].weights = {weights!r}: expected hub, random or a weights file "
                       f"(no such file {path})")
            weights = str(path)
        quantize = r.choice("quantize", QUANTIZE, "none")
        codec = str(r.get("codec", str, default_codec(None if quantize == "none" else quantize)))
        try:  # as NAME:LEVEL:SHUFFLE, so zstd:3 is the default and zstd:7 names zstd:7:bitshuffle
            codec = codec_name(codec_record(parse_codec(codec)))
        except EmbedstoreError as err:
            r.fail(f"encoder[{i}].codec = {codec!r}: {err}")
        pca = r.get("pca", int)
        out.append(EncoderPlan(name=name, weights=weights, seed=int(r.get("seed", int, 0)), codec=codec,
                               quantize=None if quantize == "none" else quantize,
                               pca=None if pca is None else r.positive("pca", pca)))
    _distinct(plan, "encoder", [e.id for e in out])
    return tuple(out)


def _variants(plan: Path, tables: Any) -> tuple[tuple[Variant, ...], Variant]:
    if tables is not None and not isinstance(tables, list):
        raise EmbedstoreError(f"{plan}: variant: expected [[variant]] tables")
    variants = []
    for i, table in enumerate(tables or []):
        r = _Reader(plan, f"variant[{i}]", table, _VARIANT)
        levels_value = r.get("levels", (str, list), "0,1,2,3")
        text = ",".join(map(str, levels_value)) if isinstance(levels_value, list) else levels_value
        levels = parse_levels(text, f"{plan}: variant[{i}].levels")
        preset = str(r.get("decoder", str, "lite"))
        if preset not in PRESETS:
            r.fail(f"variant[{i}].decoder = {preset!r}: unknown; choose one of {', '.join(sorted(PRESETS))}")
        name = str(r.get("name", str, f"{preset}-L{''.join(map(str, levels))}" if levels else BASELINE))
        try:
            variants.append(Variant(name=name, preset=preset, levels=levels))
        except EmbedstoreError as err:
            r.fail(f"variant[{i}]: {err}")
    baselines = [v for v in variants if not v.levels]
    if len(baselines) > 1:
        raise EmbedstoreError(f"{plan}: variant: {', '.join(v.name for v in baselines)} all read levels none; "
                              "a study has one baseline")
    encoder_variants = tuple(v for v in variants if v.levels)
    if not encoder_variants:
        encoder_variants = (Variant(name="lite-L0123", preset="lite", levels=(0, 1, 2, 3)),)
    baseline = baselines[0] if baselines else Variant(name=BASELINE, preset=encoder_variants[0].preset, levels=())
    _distinct(plan, "variant", [v.name for v in (*encoder_variants, baseline)])
    return encoder_variants, baseline


def _distinct(plan: Path, what: str, names: list[str]) -> None:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise EmbedstoreError(f"{plan}: {what} names must differ; {', '.join(twice)} given twice")


def load_plan(path: str | Path) -> StudyPlan:
    """Read and check ``PLAN.toml``.

    Raises
    ------
    EmbedstoreError : no such file, bad TOML, or a bad key (one line naming the file and the key).
    """
    plan = Path(path).expanduser().resolve()
    try:
        data = tomllib.loads(plan.read_text())
    except FileNotFoundError:
        raise EmbedstoreError(f"{plan}: no such plan file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise EmbedstoreError(f"{plan}: unreadable plan ({err})") from None
    except tomllib.TOMLDecodeError as err:
        raise EmbedstoreError(f"{plan}: not valid TOML ({err})") from None
    top = _Reader(plan, "", data, _TOP)
    out = _path(plan.parent, str(top.get("out", str, "study-out")))
    stores = _path(plan.parent, str(top.get("stores", str))) if "stores" in data else out / "stores"
    settings = _settings(plan, data)
    variants, baseline = _variants(plan, data.get("variant"))
    return StudyPlan(path=plan, out=out, datasets=_datasets(plan, data.get("dataset"), stores, settings),
                     encoders=_encoders(plan, data.get("encoder")), variants=variants, baseline=baseline,
                     settings=settings, raw=data)
