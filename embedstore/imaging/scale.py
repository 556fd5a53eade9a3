"""Pixel scale: one parser for the magnification strings of datasets, targets and post-processing."""

from __future__ import annotations

from embedstore.errors import EmbedstoreError


def parse_magnification(magnification: str | float) -> float:
    """Read ``"40x"``, ``"20X"``, ``"40"`` or ``40.0`` as a positive float.

    Raises
    ------
    EmbedstoreError
        When the value is not a positive number with an optional ``x`` suffix.
    """
    text = str(magnification).strip().lower().removesuffix("x")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise EmbedstoreError(f"magnification {magnification!r} is not a positive number like '20x' or 40")
    return value
