"""Decoder variants trained in one pass: which levels and preset each reads, its name, its level inputs.

A variant is one decoder design (preset + the encoder levels it reads); every variant trains every seed
of a run on the same batches. The loader reads the union of the variants' levels once per batch and
:func:`pick_levels` hands each decoder its own subset, so adding a variant costs its decoder's compute
only. Importable without torch (the CLI parses ``--variant`` with it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from embedstore.errors import EmbedstoreError
from embedstore.trainer.model.presets import PRESETS

ALL_LEVELS = (0, 1, 2, 3)
NO_LEVELS = "none"
"""The spelling of the empty level set (the RGB-only baseline) in ``--levels`` and ``--variant``."""

T = TypeVar("T")


def parse_levels(text: str, option: str = "--levels") -> tuple[int, ...]:
    """``"0,1,2,3"`` -> (0, 1, 2, 3); ``"none"`` -> () (no encoder level); refuses anything else."""
    if text.strip().lower() == NO_LEVELS:
        return ()
    try:
        levels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise EmbedstoreError(f"{option} {text!r}: expected levels such as 0,1,2,3 or 2,3, or 'none'") from None
    if not levels or list(levels) != sorted(set(levels)) or not set(levels) <= set(ALL_LEVELS):
        raise EmbedstoreError(f"{option} {text!r}: levels must be ascending and distinct in 0..3, or 'none'")
    return levels


def levels_text(levels: Sequence[int]) -> str:
    """Inverse of :func:`parse_levels`: (2, 3) -> "2,3", () -> "none"."""
    return ",".join(map(str, levels)) or NO_LEVELS


@dataclass(frozen=True)
class Variant:
    """One decoder design of a multi-variant run.

    Attributes
    ----------
    name : its run folder's name inside the ``out`` folder (letters, digits, ``-``, ``_``, ``.``).
    preset : decoder widths ("lite" / "cisca").
    levels : ascending encoder levels it reads; () = none (RGB stem only).
    """

    name: str
    preset: str
    levels: tuple[int, ...]

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise EmbedstoreError(f"variant name {self.name!r}: use letters, digits, '-', '_' or '.'")
        if self.preset not in PRESETS:
            raise EmbedstoreError(f"variant {self.name}: decoder preset {self.preset!r} is unknown; "
                                  f"choose one of {sorted(PRESETS)}")


def default_name(preset: str, levels: Sequence[int]) -> str:
    """``<preset>-L<levels>`` (``lite-L23``, ``lite-L0123``) or ``<preset>-none`` for the baseline."""
    return f"{preset}-{'L' + ''.join(map(str, levels)) if levels else NO_LEVELS}"


def parse_variant(text: str, preset: str = "lite") -> Variant:
    """A ``--variant`` value: ``key=value`` pairs joined by ``:``, keys ``levels``, ``decoder`` and ``name``.

    ``levels=2,3``, ``levels=none:decoder=cisca``, ``name=deep:levels=3``. Missing keys take ``levels``
    0,1,2,3, the run's ``--decoder`` (``preset``) and :func:`default_name`.
    """
    fields: dict[str, str] = {}
    for pair in text.split(":"):
        key, sep, value = pair.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("levels", "decoder", "name") or key in fields:
            raise EmbedstoreError(f"--variant {text!r}: expected KEY=VALUE pairs joined by ':' with keys levels, "
                                  "decoder, name (each once), e.g. levels=2,3:decoder=cisca")
        fields[key] = value.strip()
    levels = parse_levels(fields.get("levels", levels_text(ALL_LEVELS)), f"--variant {text!r}: levels")
    chosen = fields.get("decoder", preset)
    return Variant(name=fields.get("name") or default_name(chosen, levels), preset=chosen, levels=levels)


def check_variants(variants: Sequence[Variant]) -> None:
    """At least one variant, and distinct names (each gets its own run folder)."""
    if not variants:
        raise EmbedstoreError("give at least one decoder variant")
    names = [v.name for v in variants]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise EmbedstoreError(f"--variant names must differ; {', '.join(twice)} given twice (add name=...)")


def union_levels(variants: Sequence[Variant]) -> tuple[int, ...]:
    """The ascending union of the variants' levels: what the loader reads for all of them."""
    return tuple(sorted({k for v in variants for k in v.levels}))


def pick_levels(read: Sequence[int], tensors: Sequence[T], wanted: Sequence[int]) -> list[T]:
    """The ``wanted`` levels out of ``tensors``, which hold the levels ``read`` in that order."""
    return [tensors[list(read).index(k)] for k in wanted]
