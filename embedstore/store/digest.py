"""Content digests of a store: sha256 per chunk file, per array, per group and for the whole store.

Extraction and ingest are deterministic (the same inputs give the same chunk bytes), so a digest
identifies the data: a collaborator checks a downloaded store against the digest its author published
(``embed verify STORE --expect DIGEST``). Digests cover the arrays only (their ``zarr.json`` and chunk
files), not group attributes, which hold dates and versions.

Manifests keep the sha256 of every array file, so ``verify`` can name the shard, and hence the tiles,
that changed: a swapped or replaced chunk file passes its own checksum but not the manifest. There is
one manifest per writer, written when its work is complete: the ``manifest`` group at the store root
for images, labels and the sample table (end of ingest) and ``features/<key>/manifest`` per feature
group (end of its extraction), so each is written by exactly one process and never rewritten by another.
A manifest is an empty zarr group whose attributes hold the hashes: any zarr reader (folder, zip, URL)
reads it, and zarr sees no foreign file in the hierarchy.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zarr

from embedstore.errors import EmbedstoreError

MANIFEST = "manifest"
MANIFEST_VERSION = 1


def _array_roots(keys: list[str], metadata: dict[str, dict[str, Any]]) -> list[str]:
    """Paths of the arrays among ``keys`` (folders whose zarr.json says node_type array), sorted."""
    return sorted(k.removesuffix("/zarr.json").removesuffix("zarr.json").rstrip("/")
                  for k, meta in metadata.items() if meta.get("node_type") == "array")


def _entries(location: str | Path, scope: str | None) -> Iterator[tuple[str, bytes]]:
    """(key, content) of the files of a store folder or zip in ``scope`` (None: all), keys relative with '/'.

    Only files of the scope are read: the manifest of one feature group never reads the other groups.
    """
    text = str(location)
    if "://" in text:  # an s3:// output store: list and read its objects
        from embedstore.share.remote import remote_filesystem  # share imports store: imported where used

        fs, root = remote_filesystem(text)
        root = root.rstrip("/")
        for name in sorted(fs.find(f"{root}/{scope}" if scope else root)):
            key = name[len(root) + 1:]
            if scope is None or scope_of(key) == scope:
                yield key, fs.cat_file(name)
        return
    path = Path(text)
    if path.is_dir():
        root = path / scope if scope else path
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            key = file.relative_to(path).as_posix()
            if scope is None or scope_of(key) == scope:
                yield key, file.read_bytes()
    elif path.is_file() and path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                if not info.is_dir() and (scope is None or scope_of(info.filename) == scope):
                    yield info.filename, zf.read(info)
    else:
        raise EmbedstoreError(f"{location}: digests need a local store folder or .zip")


def file_hashes(location: str | Path, scope: str | None = None) -> dict[str, str]:
    """sha256 hex of every file that belongs to an array of the store (or of one manifest ``scope``, see
    :func:`scope_of`), by key (sorted)."""
    hashes: dict[str, str] = {}
    metadata: dict[str, dict[str, Any]] = {}
    for key, content in _entries(location, scope):
        if key.endswith("zarr.json"):
            try:
                metadata[key] = json.loads(content)
            except json.JSONDecodeError:
                metadata[key] = {"node_type": "array"}  # a damaged array metadata file still counts
        hashes[key] = hashlib.sha256(content).hexdigest()
    arrays = _array_roots(list(metadata), metadata)
    return {k: h for k, h in sorted(hashes.items()) if any(k == f"{a}/zarr.json" or k.startswith(f"{a}/")
                                                          for a in arrays)}


def combine(hashes: dict[str, str], prefix: str = "") -> str:
    """One sha256 over the ``key hash`` lines of the files under ``prefix`` (all when empty), in key order."""
    h = hashlib.sha256()
    for key in sorted(hashes):
        if not prefix or key.startswith(prefix.rstrip("/") + "/"):
            h.update(f"{key} {hashes[key]}\n".encode())
    return h.hexdigest()


def group_prefixes(hashes: dict[str, str]) -> list[str]:
    """The digest groups: ``images``, ``labels``, ``samples`` and each ``features/<encoder>``."""
    groups = set()
    for key in hashes:
        parts = key.split("/")
        groups.add("/".join(parts[:2]) if parts[0] == "features" and len(parts) > 2 else parts[0])
    return sorted(groups)


def scope_of(key: str) -> str:
    """The manifest scope of a file: ``features/<key>`` for feature files, "" (the root) for the rest."""
    parts = key.split("/")
    return "/".join(parts[:2]) if parts[0] == "features" and len(parts) > 2 else ""


def compute_manifest(location: str | Path, scope: str | None = None) -> dict[str, Any]:
    """Manifest content of one scope ("" = images, labels, samples; ``features/<key>``), or the whole store
    (``scope=None``): per-file hashes, per-group digests and the digest ``sha256:<hex>``."""
    hashes = file_hashes(location, scope)
    return {
        "manifest_version": MANIFEST_VERSION,
        "digest": f"sha256:{combine(hashes)}",
        "groups": {g: f"sha256:{combine(hashes, g)}" for g in group_prefixes(hashes)},
        "files": hashes,
    }


def write_manifest(location: str | Path, scope: str = "") -> dict[str, Any]:
    """Compute the manifest of ``scope`` and write it as the ``manifest`` group there (``zarr.json`` written
    to a temporary file and renamed, so a kill never leaves half a manifest)."""
    manifest = compute_manifest(location, scope)
    node = {"zarr_format": 3, "node_type": "group", "attributes": {"embedstore_manifest": manifest}}
    if "://" in str(location):  # an object PUT is all-or-nothing: no temporary name needed
        from embedstore.share.remote import remote_filesystem

        fs, root = remote_filesystem(str(location))
        fs.pipe_file("/".join(p.strip("/") for p in (root, scope, MANIFEST, "zarr.json") if p), json.dumps(node).encode())
        return manifest
    folder = (Path(str(location)) / scope if scope else Path(str(location))) / MANIFEST
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "zarr.json.tmp"
    tmp.write_text(json.dumps(node))
    tmp.replace(folder / "zarr.json")
    return manifest


def read_manifests(group: zarr.Group) -> dict[str, dict[str, Any]]:
    """Every manifest of an opened store's root group, by scope ("" or ``features/<key>``)."""
    out = {}
    scopes = [""] + [f"features/{k}" for k in (group["features"].group_keys() if "features" in group else ())]
    for scope in scopes:
        path = f"{scope}/{MANIFEST}".lstrip("/")
        if path in group:
            out[scope] = dict(group[path].attrs.get("embedstore_manifest", {}))
    return out


def compare(stored: dict[str, str], current: dict[str, str]) -> dict[str, list[str]]:
    """Files ``changed``, ``missing`` and ``extra`` in ``current`` against the manifest's ``stored`` hashes."""
    return {
        "changed": sorted(k for k in stored.keys() & current.keys() if stored[k] != current[k]),
        "missing": sorted(stored.keys() - current.keys()),
        "extra": sorted(current.keys() - stored.keys()),
    }
