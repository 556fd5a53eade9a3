"""Pack a store into one Zarr zip file and unpack it again, safely.

A packed store is a plain Zarr v3 zip store: the entries are the store's files under their keys
(``zarr.json``, ``images/c/0/0/0/0``, ...), STORED without recompression (the chunks are already
compressed), in sorted order with a fixed timestamp so that packing the same store twice gives the
same bytes. Both directions write to a temporary sibling and rename at the end, so a killed run
leaves nothing half-written under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from embedstore.errors import EmbedstoreError
from embedstore.progress import progress_bar
from embedstore.store import check_schema

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
COPY_BLOCK = 8 * 2**20


def store_files(store_dir: Path) -> list[tuple[str, Path]]:
    """Every file of a local store as ``(key, path)``, sorted by key (the zip entry order)."""
    files = [(p.relative_to(store_dir).as_posix(), p) for p in store_dir.rglob("*") if p.is_file()]
    return sorted(files)


def check_root_json(root_json: bytes, location: str) -> None:
    """Refuse a root ``zarr.json`` that is not an embedstore group of a known schema version."""
    try:
        document = json.loads(root_json)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise EmbedstoreError(f"{location}: root zarr.json is not valid JSON; not an embedstore store") from None
    meta = document.get("attributes", {}).get("embedstore", {}) if isinstance(document, dict) else {}
    check_schema(dict(meta), location)


def _check_local_store(store_dir: Path) -> None:
    root = store_dir / "zarr.json"
    if not store_dir.is_dir() or not root.is_file():
        raise EmbedstoreError(f"{store_dir}: not a store folder (no zarr.json at its root)")
    check_root_json(root.read_bytes(), str(store_dir))


def write_zip(out_zip: Path, entries: Iterable[tuple[str, Path]], *, description: str,
              progress: bool = True) -> None:
    """Write ``entries`` (key, file) STORED into ``out_zip`` via ``out_zip.partial`` and an atomic rename."""
    entries = list(entries)
    partial = out_zip.with_name(out_zip.name + ".partial")
    total = sum(path.stat().st_size for _, path in entries)
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf, \
                progress_bar(description, total=total, unit="B", enabled=progress) as advance:
            for key, path in entries:
                info = zipfile.ZipInfo(key, date_time=ZIP_EPOCH)
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                info.file_size = path.stat().st_size
                with path.open("rb") as src, zf.open(info, "w") as dst:
                    while block := src.read(COPY_BLOCK):
                        dst.write(block)
                        advance(len(block))
        os.replace(partial, out_zip)
    finally:
        partial.unlink(missing_ok=True)


def pack_store(store_dir: str | Path, out_zip: str | Path, *, progress: bool = True,
               overwrite: bool = False) -> Path:
    """Pack a local store folder (its manifest and every chunk file) into a Zarr zip store.

    The result opens read-only anywhere a store path is accepted (``open_store('x.zip')``).
    """
    store_dir, out_zip = Path(store_dir), Path(out_zip)
    _check_local_store(store_dir)
    if out_zip.suffix != ".zip":
        raise EmbedstoreError(f"{out_zip}: a packed store must be named *.zip")
    if out_zip.resolve().is_relative_to(store_dir.resolve()):
        raise EmbedstoreError(f"{out_zip}: cannot write the zip inside the store it packs")
    if out_zip.exists() and not overwrite:
        raise EmbedstoreError(f"{out_zip}: already exists; remove it or choose another name")
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    write_zip(out_zip, store_files(store_dir), description=f"pack {store_dir.name}", progress=progress)
    return out_zip


def _open_zip(zip_path: Path) -> zipfile.ZipFile:
    if not zip_path.is_file():
        raise EmbedstoreError(f"{zip_path}: no such zip file")
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise EmbedstoreError(f"{zip_path}: not a readable zip file ({err})") from None


def check_members(zf: zipfile.ZipFile, location: str) -> list[zipfile.ZipInfo]:
    """The zip's file entries; refuse absolute paths, ``..``, backslashes and symlinks (zip-slip)."""
    members = []
    for info in zf.infolist():
        name = info.filename
        parts = PurePosixPath(name).parts
        if name.startswith("/") or "\\" in name or (parts and ":" in parts[0]) or ".." in parts:
            raise EmbedstoreError(f"{location}: refusing unsafe zip entry {name!r} (absolute path or '..')")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise EmbedstoreError(f"{location}: refusing zip entry {name!r}: it is a symbolic link")
        if not info.is_dir():
            members.append(info)
    return members


def extract_members(zf: zipfile.ZipFile, members: list[zipfile.ZipInfo], dest: Path, location: str) -> None:
    """Extract checked members under ``dest``; a CRC mismatch or truncated entry is a one-line error."""
    for info in members:
        target = dest / info.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with zf.open(info) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, COPY_BLOCK)
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise EmbedstoreError(f"{location}: entry {info.filename!r} is corrupt ({err})") from None


def unpack_store(zip_path: str | Path, out_dir: str | Path) -> Path:
    """Unpack a packed store into a new folder ``out_dir`` (extracted next to it, then renamed)."""
    zip_path, out_dir = Path(zip_path), Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise EmbedstoreError(f"{out_dir}: already exists and is not empty; choose a new folder")
    with _open_zip(zip_path) as zf:
        members = check_members(zf, str(zip_path))
        if "zarr.json" not in {info.filename for info in members}:
            raise EmbedstoreError(f"{zip_path}: not a packed store (no zarr.json at the zip's root)")
        check_root_json(zf.read("zarr.json"), str(zip_path))
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
        try:
            extract_members(zf, members, staging, str(zip_path))
            move_into_place(staging, out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def move_into_place(staging: Path, out_dir: Path) -> None:
    """Rename a fully written staging folder to ``out_dir`` (an empty ``out_dir`` is replaced)."""
    if out_dir.exists():
        out_dir.rmdir()
    os.replace(staging, out_dir)
