"""Publish a store on the Hugging Face Hub in a layout the Hub accepts, and get it back.

The Hub limits a repo to about 100k files and a folder to 10k entries, and uploads of many small
files fail, while a store holds one file per shard. So a store is pushed as a few zip files (STORED,
the chunks are already compressed): one unit for the dataset (images, labels, sample table, root
metadata and manifest) and one per encoder feature group, each split at file boundaries into parts
under ``part_bytes``; every part is a standalone zip. ``embedstore-index.json`` lists the parts
with their size and sha256, and the root files (e.g. the manifest) are also uploaded as they are, so
a collaborator can read the digest before downloading. Repo layout::

    embedstore-index.json
    <root files, e.g. manifest.json>
    data/dataset-000.zip
    data/features-<key>-000.zip, data/features-<key>-001.zip, ...

``pull`` downloads the parts (``snapshot_download``), checks each sha256 against the index, and
extracts them (zip-slip refused) into a normal store folder; ``hf://`` URLs of this layout open
by pulling once into the cache. Nothing is unpickled and no remote code runs.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import zarr

from embedstore.encoders.licence import licence_notice
from embedstore.errors import EmbedstoreError
from embedstore.share.pack import (
    check_members,
    check_root_json,
    extract_members,
    move_into_place,
    store_files,
    write_zip,
)
from embedstore.share.errors import remote_error
from embedstore.store.info import group_licence

INDEX_NAME = "embedstore-index.json"
LAYOUT_FORMAT = "embedstore-hub"
LAYOUT_VERSION = 1
DATA_FOLDER = "data"
DEFAULT_PART_BYTES = 4 * 2**30
HUB_MAX_FILE_BYTES = 50 * 10**9
HUB_MAX_FILES = 100_000
HUB_MAX_FOLDER_ENTRIES = 10_000
ZIP_ENTRY_OVERHEAD = 76  # local + central header bytes per entry, plus the name twice
URL_PATTERN = re.compile(r"^hf://datasets/(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<rev>[^/]+))?(?:/(?P<path>.*?))?/?$")


@dataclass(frozen=True)
class HubAddress:
    """``hf://datasets/ORG/NAME[@revision][/path]`` split into its parts."""

    repo_id: str
    revision: str | None
    path: str

    def repo_path(self, name: str) -> str:
        return f"{self.path}/{name}" if self.path else name


def parse_hub_url(url: str) -> HubAddress:
    """Split a dataset URL; anything else (models, spaces, bare ids) is a one-line error."""
    match = URL_PATTERN.match(url)
    if not match:
        raise EmbedstoreError(f"{url}: expected hf://datasets/ORG/NAME[@revision][/path]")
    return HubAddress(match["repo"], match["rev"], (match["path"] or "").strip("/"))


@dataclass(frozen=True)
class PlannedPart:
    """One zip of the layout: its repo path, its unit and the store keys it holds."""

    path: str
    unit: str
    keys: tuple[str, ...]
    bytes: int


@dataclass(frozen=True)
class PushPlan:
    """Everything ``push`` would upload, computed from the store folder alone (``--dry-run``)."""

    store_dir: Path
    address: HubAddress
    parts: tuple[PlannedPart, ...]
    root_files: tuple[str, ...]
    licences: dict[str, dict[str, Any]] = field(default_factory=dict)

    def repo_files(self) -> list[str]:
        """Repo paths that ``push`` writes (index, root files, parts)."""
        names = [INDEX_NAME, *self.root_files, *(part.path for part in self.parts)]
        return [self.address.repo_path(name) for name in names]

    def describe(self) -> str:
        """The plan as text: one line per repo file, then each encoder group's licence notice."""
        lines = [f"push {self.store_dir} -> hf://datasets/{self.address.repo_id}"
                 f"{'/' + self.address.path if self.address.path else ''} ({len(self.repo_files())} files)"]
        lines += [f"  {self.address.repo_path(INDEX_NAME)}"]
        lines += [f"  {self.address.repo_path(name)}" for name in self.root_files]
        lines += [f"  {self.address.repo_path(p.path)}  {p.unit}, {len(p.keys)} files, {p.bytes / 2**20:.1f} MiB"
                  for p in self.parts]
        lines += [licence_notice(key, record) for key, record in sorted(self.licences.items())]
        return "\n".join(lines)


def _unit_of(key: str) -> str:
    parts = key.split("/")
    return f"features/{parts[1]}" if parts[0] == "features" and len(parts) > 2 else "dataset"


def _part_name(unit: str, index: int) -> str:
    return f"{DATA_FOLDER}/{unit.replace('/', '-')}-{index:03d}.zip"


def _licences(store_dir: Path, units: list[str]) -> dict[str, dict[str, Any]]:
    """Each feature group's licence record (:func:`embedstore.store.info.group_licence`), by group key."""
    root = zarr.open_group(store_dir, mode="r")
    return {unit.split("/", 1)[1]: group_licence(root[unit]) for unit in units if unit.startswith("features/")}


def push_plan(store_dir: str | Path, url: str, *, part_bytes: int = DEFAULT_PART_BYTES) -> PushPlan:
    """The Hub layout of a local store: parts per unit under ``part_bytes``, within the Hub's limits."""
    store_dir = Path(store_dir)
    address = parse_hub_url(url)
    root = store_dir / "zarr.json"
    if not root.is_file():
        raise EmbedstoreError(f"{store_dir}: not a store folder (no zarr.json at its root)")
    check_root_json(root.read_bytes(), str(store_dir))
    by_unit: dict[str, list[tuple[str, int]]] = {}
    for key, path in store_files(store_dir):
        size = path.stat().st_size
        if size > HUB_MAX_FILE_BYTES:
            raise EmbedstoreError(f"{store_dir}/{key}: {size / 1e9:.1f} GB is over the Hub's file limit; "
                                  "re-extract with fewer tiles per shard")
        by_unit.setdefault(_unit_of(key), []).append((key, size))
    parts: list[PlannedPart] = []
    for unit in sorted(by_unit, key=lambda u: (u != "dataset", u)):
        keys: list[str] = []
        used = 0
        for key, size in by_unit[unit]:
            cost = size + ZIP_ENTRY_OVERHEAD + 2 * len(key)
            if keys and used + cost > part_bytes:
                parts.append(PlannedPart(_part_name(unit, len([p for p in parts if p.unit == unit])), unit,
                                         tuple(keys), used))
                keys, used = [], 0
            keys.append(key)
            used += cost
        parts.append(PlannedPart(_part_name(unit, len([p for p in parts if p.unit == unit])), unit,
                                 tuple(keys), used))
    root_files = tuple(key for key, _ in by_unit.get("dataset", []) if "/" not in key and key != "zarr.json")
    plan = PushPlan(store_dir, address, tuple(parts), root_files, _licences(store_dir, sorted(by_unit)))
    if len(plan.repo_files()) > HUB_MAX_FILES or len(parts) > HUB_MAX_FOLDER_ENTRIES:
        raise EmbedstoreError(f"{store_dir}: {len(parts)} parts exceed the Hub's file limits; raise part_bytes")
    return plan


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(8 * 2**20):
            digest.update(block)
    return digest.hexdigest()


def _index(plan: PushPlan, staging: Path) -> dict[str, Any]:
    meta = json.loads((plan.store_dir / "zarr.json").read_text())["attributes"]["embedstore"]
    return {
        "format": LAYOUT_FORMAT,
        "layout_version": LAYOUT_VERSION,
        "store": {"schema_version": meta.get("schema_version"), "n_samples": meta.get("n_samples"),
                  "dataset": meta.get("dataset", {}).get("name")},
        "root_files": list(plan.root_files),
        "licences": plan.licences,
        "parts": [{"path": p.path, "unit": p.unit, "entries": len(p.keys),
                   "bytes": (staging / p.path).stat().st_size, "sha256": _sha256(staging / p.path)}
                  for p in plan.parts],
    }


def _hub_api(endpoint: str | None, token: str | None) -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token)


def push(store_dir: str | Path, url: str, *, private: bool = False, dry_run: bool = False,
         part_bytes: int = DEFAULT_PART_BYTES, token: str | None = None, endpoint: str | None = None,
         staging_dir: str | Path | None = None, progress: bool = True) -> PushPlan:
    """Upload a store to a Hub dataset repo in one commit (creating the repo); ``dry_run`` only plans.

    Parts of an earlier push under ``data/`` are replaced. Staging needs free disk about the
    store's size (``staging_dir``, default the system temp folder).
    """
    plan = push_plan(store_dir, url, part_bytes=part_bytes)
    if dry_run:
        return plan
    address, secrets = plan.address, (token,) if token else ()
    with tempfile.TemporaryDirectory(prefix="embedstore-push-", dir=staging_dir) as tmp:
        staging = Path(tmp)
        (staging / DATA_FOLDER).mkdir()
        for part in plan.parts:
            write_zip(staging / part.path, [(key, plan.store_dir / key) for key in part.keys],
                      description=f"zip {part.path}", progress=progress)
        for name in plan.root_files:
            shutil.copy2(plan.store_dir / name, staging / name)
        (staging / INDEX_NAME).write_text(json.dumps(_index(plan, staging), indent=1))
        api = _hub_api(endpoint, token)
        try:
            api.create_repo(address.repo_id, repo_type="dataset", private=private, exist_ok=True)
            api.upload_folder(folder_path=staging, repo_id=address.repo_id, repo_type="dataset",
                              path_in_repo=address.path or None, revision=address.revision,
                              commit_message=f"embedstore push of {plan.store_dir.name}",
                              delete_patterns=[address.repo_path(f"{DATA_FOLDER}/*")])
        except Exception as err:
            raise remote_error(url, err, secrets=secrets) from None
    return plan


def _read_index(path: Path, url: str) -> dict[str, Any]:
    try:
        index = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise EmbedstoreError(f"{url}: {INDEX_NAME} is not valid JSON") from None
    if not isinstance(index, dict) or index.get("format") != LAYOUT_FORMAT:
        raise EmbedstoreError(f"{url}: {INDEX_NAME} is not an embedstore Hub index")
    if index.get("layout_version") != LAYOUT_VERSION:
        raise EmbedstoreError(f"{url}: Hub layout version {index.get('layout_version')} is not supported "
                              f"(this embedstore reads layout version {LAYOUT_VERSION}); upgrade embedstore")
    for part in index.get("parts", []):
        parts = PurePosixPath(part.get("path", "")).parts
        if not parts or parts[0] != DATA_FOLDER or ".." in parts or not part["path"].endswith(".zip"):
            raise EmbedstoreError(f"{url}: {INDEX_NAME} names an unexpected file {part.get('path')!r}")
    return index


def _commit(api: Any, address: HubAddress, url: str, secrets: tuple[str, ...]) -> str:
    """The commit sha that ``address`` (its revision, or the default branch) points to now."""
    try:
        return str(api.dataset_info(address.repo_id, revision=address.revision).sha)
    except Exception as err:
        raise remote_error(url, err, secrets=secrets) from None


def pull(url: str, out_dir: str | Path, *, encoders: list[str] | None = None, token: str | None = None,
         endpoint: str | None = None) -> Path:
    """Download a pushed store into a new folder ``out_dir`` (verified, then renamed into place).

    ``encoders`` (feature group keys) limits the download to the dataset and those groups.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise EmbedstoreError(f"{out_dir}: already exists and is not empty; choose a new folder")
    address, secrets = parse_hub_url(url), (token,) if token else ()
    from huggingface_hub.errors import EntryNotFoundError

    api = _hub_api(endpoint, token)
    sha = _commit(api, address, url, secrets)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        downloads, assembled = staging / "download", staging / "store"
        try:
            index_path = api.hf_hub_download(address.repo_id, address.repo_path(INDEX_NAME), repo_type="dataset",
                                             revision=sha, local_dir=downloads)
        except EntryNotFoundError:
            raise EmbedstoreError(f"{url}: no {INDEX_NAME} in the repo; it was not published with `embed push`") \
                from None
        except Exception as err:
            raise remote_error(url, err, secrets=secrets) from None
        index = _read_index(Path(index_path), url)
        parts = [p for p in index["parts"]
                 if encoders is None or p["unit"] == "dataset" or p["unit"].split("/", 1)[1] in encoders]
        have = {p["unit"].split("/", 1)[1] for p in parts if p["unit"] != "dataset"}
        if missing := sorted(set(encoders or ()) - have):
            raise EmbedstoreError(f"{url}: no features for {', '.join(missing)} in this repo")
        try:
            api.snapshot_download(address.repo_id, repo_type="dataset", revision=sha, local_dir=downloads,
                                  allow_patterns=[address.repo_path(p["path"]) for p in parts])
        except Exception as err:
            raise remote_error(url, err, secrets=secrets) from None
        for part in parts:
            local = downloads / address.repo_path(part["path"])
            if not local.is_file() or local.stat().st_size != part["bytes"] or _sha256(local) != part["sha256"]:
                raise EmbedstoreError(f"{url}: {part['path']} does not match its sha256 in {INDEX_NAME} "
                                      "(truncated or altered download); try again")
            with zipfile.ZipFile(local) as zf:
                extract_members(zf, check_members(zf, f"{url}/{part['path']}"), assembled, f"{url}/{part['path']}")
        root = assembled / "zarr.json"
        if not root.is_file():
            raise EmbedstoreError(f"{url}: the pulled parts hold no root zarr.json; not a store")
        check_root_json(root.read_bytes(), url)
        move_into_place(assembled, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def open_hub_layout(url: str, cache_root: Path, *, endpoint: str | None = None,
                    token: str | None = None) -> Path:
    """The local folder of a pushed store, pulled once per commit into ``cache_root``."""
    address, secrets = parse_hub_url(url), (token,) if token else ()
    sha = _commit(_hub_api(endpoint, token), address, url, secrets)
    local = cache_root / sha / "store"
    if not (local / "zarr.json").is_file():
        pinned = f"hf://datasets/{address.repo_id}@{sha}" + (f"/{address.path}" if address.path else "")
        pull(pinned, local, token=token, endpoint=endpoint)
    return local
