"""A plain-dict description of a store, for `embed info` and for Python users: what it holds and how it was made."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import zarr

from embedstore.encoders.licence import licence_fields, licence_notice
from embedstore.store.codecs import codec_name
from embedstore.store.digest import read_manifests
from embedstore.store.features import transform_summary
from embedstore.store.zarr_store import Store, completeness, open_store, store_bytes


def group_licence(group: zarr.Group) -> dict[str, Any]:
    """A feature group's licence record: its ``licence`` attribute (schema 2), else read from its encoder spec."""
    if "licence" in group.attrs:
        return dict(group.attrs["licence"])
    spec = dict(group.attrs.get("encoder", {}))
    return licence_fields(str(spec.get("licence") or ""), bool(spec.get("gated")), str(spec.get("source") or ""))


def licence_notices(store: Store) -> list[str]:
    """One line per feature group: its weights licence and, for restricted models, that the features follow it."""
    return [licence_notice(key, group_licence(store.features(key))) for key in store.feature_keys()]


def describe_store(location: str | Path) -> dict[str, Any]:
    """Dataset, tiles per split, per-encoder levels/dtype/views/codec/transform/completeness, provenance, licence,
    digests, bytes."""
    store = open_store(location)
    samples = store.samples()
    manifests = read_manifests(store.group)
    encoders = {}
    for key in store.feature_keys():
        group = store.features(key)
        done, total = completeness(group)
        attrs = dict(group.attrs)
        encoders[key] = {
            "fingerprint": attrs.get("fingerprint"),
            "weights_source": attrs.get("weights_source"),
            "level_shapes": attrs.get("level_shapes"),
            "storage_dtype": attrs.get("storage_dtype"),
            "compute_dtype": attrs.get("compute_dtype"),
            "views": attrs.get("views"),
            "codec": attrs.get("codec"),
            "codec_name": codec_name(attrs.get("codec")),
            "transform": attrs.get("transform"),
            "transform_summary": transform_summary(attrs.get("transform")),
            "created": attrs.get("created"),
            "library_versions": attrs.get("library_versions", {}),
            "licence": group_licence(group),
            "digest": manifests.get(f"features/{key}", {}).get("digest"),
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
        "dataset_digest": manifests.get("", {}).get("digest"),
        "splits": dict(sorted(Counter(samples.split.tolist()).items())),
        "encoders": encoders,
        "licence_notices": licence_notices(store),
        "bytes": store_bytes(location),
    }
