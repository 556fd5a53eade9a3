"""A plain-dict description of a store, for `embed info` and for Python users."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from embedstore.extract import completeness
from embedstore.store import open_store, store_bytes


def describe_store(location: str | Path) -> dict[str, Any]:
    """Dataset, tiles per split, classes, per-encoder levels/dtype/views/completeness and bytes on disk."""
    store = open_store(location)
    samples = store.samples()
    encoders = {}
    for key in store.feature_keys():
        group = store.features(key)
        done, total = completeness(group)
        encoders[key] = {
            "fingerprint": group.attrs.get("fingerprint"),
            "level_shapes": group.attrs.get("level_shapes"),
            "storage_dtype": group.attrs.get("storage_dtype"),
            "views": group.attrs.get("views"),
            "committed": done,
            "total": total,
            "bytes": store_bytes(f"{str(location).rstrip('/')}/features/{key}"),
        }
    return {
        "schema_version": store.meta["schema_version"],
        "created_by": store.meta.get("created_by"),
        "n_samples": store.n_samples,
        "tile_size": store.tile_size,
        "ingest_complete": store.ingest_complete,
        "dataset": store.dataset,
        "splits": dict(sorted(Counter(samples.split.tolist()).items())),
        "encoders": encoders,
        "bytes": store_bytes(location),
    }
