"""Look datasets up by name, check and convert their options, and describe them for ``embed datasets``.

Options are the keyword-only parameters of each adapter function, so the adapter's signature is the one
place that lists them. Values given as strings (from the command line) are converted to the parameter's
type, e.g. ``"0.1"`` to a float or ``"false"`` to a bool.
"""

from __future__ import annotations

import inspect
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from embedstore.datasets.base import TiledDataset
from embedstore.datasets.conic import conic
from embedstore.datasets.consep import consep
from embedstore.datasets.cytodark0 import cytodark0
from embedstore.datasets.folder import folder
from embedstore.datasets.monuseg import monuseg
from embedstore.datasets.pannuke import pannuke
from embedstore.datasets.synthetic import synthetic
from embedstore.errors import EmbedstoreError


@dataclass(frozen=True)
class Adapter:
    """A dataset adapter: its builder, whether it reads a data folder, and a one-line summary."""

    build: Callable[..., TiledDataset]
    needs_data_dir: bool
    summary: str


ADAPTERS: dict[str, Adapter] = {
    "pannuke": Adapter(pannuke, True, "PanNuke H&E 40x, 256px tiles, 5 classes, official npy folds"),
    "conic": Adapter(conic, True, "CoNIC/Lizard H&E 20x, 256px patches, 6 classes, npy release"),
    "cytodark0": Adapter(cytodark0, True, "CytoDArk0 Nissl brain 20x/40x, 1024/2048px images, no classes (Zenodo)"),
    "consep": Adapter(consep, True, "CoNSeP H&E 40x, 1000px images, 4 merged classes (native png + mat)"),
    "monuseg": Adapter(monuseg, True, "MoNuSeg H&E 40x, 1000px tif + Aperio xml polygons, no classes"),
    "folder": Adapter(folder, True, "any images/ + labels/ (+ classes/, folds.csv) folder of png/tif/npy/mat"),
    "synthetic": Adapter(synthetic, False, "procedural H&E-like (3 classes) or Nissl-like (no classes) tiles, no data"),
}
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _options(build: Callable[..., TiledDataset]) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(build).parameters.items() if p.kind is p.KEYWORD_ONLY}


def _coerce(dataset: str, option: str, value: object, hint: object) -> object:
    """``value`` as one of the types of ``hint`` (a type or a union), parsing strings; else EmbedstoreError."""
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        origin = typing.get_origin(kind) or kind
        if origin is type(None) or (origin in (int, float) and isinstance(value, bool)):
            continue
        if isinstance(value, origin) or (origin is float and isinstance(value, int)):
            return float(value) if origin is float else value
        if origin is str and isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, str):
            text = value.strip()
            if origin is bool and text.lower() in _BOOLS:
                return _BOOLS[text.lower()]
            if origin in (int, float):
                try:
                    return origin(text)
                except ValueError:
                    continue
    raise EmbedstoreError(f"{dataset} option {option}={value!r}: expected {hint}")


def _adapter(name: str) -> Adapter:
    if name not in ADAPTERS:
        raise EmbedstoreError(f"unknown dataset {name!r}; valid datasets: {', '.join(ADAPTERS)}")
    return ADAPTERS[name]


def dataset_options(name: str, options: Mapping[str, object]) -> dict[str, object]:
    """``options`` checked against dataset ``name``'s adapter and converted to its types.

    ``-o merge_types=false`` on the command line and ``merge_types = false`` in a TOML plan give the same
    dict, so they give the same store signature. Unknown names or options raise EmbedstoreError.
    """
    params = _options(_adapter(name).build)
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise EmbedstoreError(
            f"unknown option {unknown[0]!r} for dataset {name}; valid options: {', '.join(params) or 'none'}"
        )
    hints = typing.get_type_hints(_adapter(name).build)
    return {k: _coerce(name, k, v, hints[k]) for k, v in options.items()}


def get_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    tile_size: int = 256,
    stride: int | None = None,
    **options: object,
) -> TiledDataset:
    """Build dataset ``name`` from its native layout in ``data_dir`` as fixed-size tiles.

    ``tile_size`` and ``stride`` (default: ``tile_size``, no overlap) set the tiling; ``options`` are the
    adapter's own (see :func:`list_datasets`). Unknown names or options raise EmbedstoreError listing
    the valid ones.
    """
    adapter = _adapter(name)
    kwargs = dataset_options(name, options)
    tile_size = typing.cast(int, _coerce(name, "tile_size", tile_size, int))
    stride = typing.cast("int | None", _coerce(name, "stride", stride, int | None))
    if not adapter.needs_data_dir:
        return adapter.build(tile_size, stride, **kwargs)
    if data_dir is None:
        raise EmbedstoreError(f"dataset {name} needs a data directory (data_dir)")
    return adapter.build(Path(data_dir).expanduser(), tile_size, stride, **kwargs)


def list_datasets() -> list[tuple[str, str]]:
    """(name, one-line description with the options and their defaults) for every dataset."""
    rows = []
    for name, adapter in ADAPTERS.items():
        options = ", ".join(f"{n}={p.default!r}" for n, p in _options(adapter.build).items())
        rows.append((name, f"{adapter.summary}; options: {options or 'none'}"))
    return rows
