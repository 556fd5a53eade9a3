"""`embed verify`: schema, completion markers, every chunk's checksum, finite features and the content digest.

Problems are listed by array and sample id (never a shard range alone), so a collaborator knows which
tiles a damaged download affects. Checks, in order:

1. schema version (schema 1 stores have no per-chunk checksums: said as a note, not a problem);
2. ingest markers; every ingested tile of images and labels decodes (crc32c in schema 2);
3. every committed feature tile decodes and is finite; a committed tile whose chunk is gone is missing;
4. the manifests (of ingest and of each feature group, see :mod:`embedstore.store.digest`):
   every array file still has its recorded sha256, so swapped, replaced, truncated or deleted chunk files are found even where a checksum passes;
5. ``expect``: the store digest equals the published one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from embedstore.store import digest
from embedstore.errors import EmbedstoreError
from embedstore.store.integrity import DECODE_ERRORS, CorruptTileError, read_tiles_checked
from embedstore.progress import progress_bar
from embedstore.store.zarr_store import Store


@dataclass
class VerifyReport:
    """Problems found (empty = healthy), notes (not problems) and what was read."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tiles_checked: int = 0
    groups: dict[str, tuple[int, int]] = field(default_factory=dict)
    digest: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def _sample_ids(store: Store, report: VerifyReport) -> list[str] | None:
    try:
        return [str(s) for s in store.samples().id]
    except DECODE_ERRORS as err:
        report.problems.append(f"samples: the sample table does not decode ({err})")
        return None


def _check(report: VerifyReport, array: zarr.Array, span: slice, ids: list[str] | None, **kwargs: Any) -> bool:
    try:
        read_tiles_checked(array, span, sample_ids=ids, **kwargs)
    except CorruptTileError as err:
        report.problems.append(str(err).removesuffix("; the store is damaged: run `embed verify`"))
        return False
    return True


def _file_to_tiles(key: str, tiles_per_shard: int, n: int, ids: list[str] | None) -> str:
    """``features/x/level_0/c/3/0/0`` -> "features/x/level_0 tiles 48-63 (id ... - id ...)"."""
    array, sep, coords = key.partition("/c/")
    if not sep:
        return f"{key.removesuffix('/zarr.json')} (array metadata)"
    first = int(coords.split("/")[0])
    per_chunk = 1 if array.endswith("samples/ingested") else tiles_per_shard
    start, stop = first * per_chunk, min((first + 1) * per_chunk, n) - 1
    named = f" ({ids[start]} .. {ids[stop]})" if ids is not None and stop < len(ids) else ""
    return f"{array} tiles {start}-{stop}{named}"


def _check_manifest(store: Store, report: VerifyReport, ids: list[str] | None, expect: str | None) -> None:
    location = store.location
    if "://" in location:
        if expect:
            report.problems.append(f"{location}: --expect needs a local folder or .zip (pull or download it first)")
        return
    manifests = digest.read_manifests(store.group)
    current = digest.file_hashes(location)
    report.digest = f"sha256:{digest.combine(current)}"
    unrecorded = sorted({digest.scope_of(k) for k in current} - set(manifests))
    if unrecorded:
        report.notes.append(f"no manifest for {', '.join(s or 'images/labels/samples' for s in unrecorded)}: "
                            "those chunk files cannot be checked against recorded hashes")
    for scope, manifest in manifests.items():
        mine = {k: h for k, h in current.items() if digest.scope_of(k) == scope}
        diff = digest.compare(manifest.get("files", {}), mine)
        for kind, verb in (("changed", "differs from the manifest"), ("missing", "is missing"),
                           ("extra", "is not in the manifest")):
            for file in diff[kind]:
                report.problems.append(f"{_file_to_tiles(file, store.tiles_per_shard, store.n_samples, ids)}: "
                                       f"file {file} {verb}")
    if expect and expect.removeprefix("sha256:") != report.digest.removeprefix("sha256:"):
        report.problems.append(f"store digest {report.digest} differs from the expected {expect}")


def verify_store(store: Store, *, expect: str | None = None, show_progress: bool = True) -> VerifyReport:
    """Run every check of the module docstring on an opened store; never raises for damage, reports it."""
    report = VerifyReport()
    version = int(store.meta.get("schema_version", 0))
    if version < 2:
        report.notes.append(f"schema {version}: chunks carry no checksums, so a flipped byte may go unnoticed; "
                            "re-extract with this version for checksummed chunks")
    ids = _sample_ids(store, report)
    try:
        ingested = np.asarray(store.array("samples/ingested")[:])
    except DECODE_ERRORS as err:
        raise EmbedstoreError(f"{store.location}: samples/ingested does not decode ({err})") from None
    if not store.ingest_complete or not ingested.all():
        report.problems.append(f"ingest incomplete: {int(ingested.sum())}/{ingested.size} blocks written")
    blocks = store.blocks()
    groups = {key: store.features(key) for key in store.feature_keys()}
    pixel_arrays = [name for name in ("images", "labels/instance", "labels/class") if name in store.group]
    with progress_bar("verify", total=len(blocks) * (1 + len(groups)), unit="shards",
                      enabled=show_progress) as advance:
        for k, block in enumerate(blocks):
            if ingested[k]:
                if all([_check(report, store.group[name], block, ids) for name in pixel_arrays]):
                    report.tiles_checked += block.stop - block.start
            advance(1)
        for key, group in groups.items():
            done = np.asarray(group["done"][:]).all(axis=1)
            report.groups[key] = (int(done.sum()), int(done.size))
            levels = sorted(name for name in group.array_keys() if name.startswith("level_"))
            for block in blocks:
                if done[block].any():
                    for name in levels:
                        _check(report, group[name], block, ids, finite=True, committed=done[block])
                advance(1)
    _check_manifest(store, report, ids, expect)
    return report
