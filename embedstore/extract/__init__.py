"""Extraction: a frozen encoder's four levels written into the store for every uncommitted tile.

Names are loaded on first use (PEP 562), so the command line can read the dtype choices of
:mod:`embedstore.extract.precision` without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "COMPUTE_DTYPES": "run", "ExtractReport": "run", "check_options": "run", "extract": "run",
    "group_attrs": "run", "prepare_group": "run",
    "extract_on_cluster": "distributed",
    "default_store_path": "pipeline", "extract_into_store": "pipeline", "ingest_dataset": "pipeline",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
