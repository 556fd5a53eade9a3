"""`embed info`, `verify`, `pack`, `unpack`, `push`, `pull`: option parsing and printing only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def use_cache_dir(cache_dir: Optional[Path]) -> None:
    """``--cache-dir``: where remote stores keep their chunks (inherited by evaluate's worker processes)."""
    if cache_dir is not None:
        os.environ["EMBEDSTORE_CACHE_DIR"] = str(cache_dir)


CacheDir = Annotated[Optional[Path], typer.Option(help="Local chunk cache of remote stores (default: the user cache folder, or $EMBEDSTORE_CACHE_DIR).")]


def info_command(store: Annotated[str, typer.Argument(help="Store folder, .zip or URL (https://, s3://, hf://datasets/ORG/NAME).")],
                 cache_dir: CacheDir = None) -> None:
    """Describe a store: dataset, splits, encoders with provenance and licence, completeness, digests, size."""
    from embedstore.store.info import describe_store

    use_cache_dir(cache_dir)
    d = describe_store(store)
    ds = d["dataset"]
    console.print(f"[bold]{store}[/bold]  schema {d['schema_version']}, {d['created_by']}, "
                  f"{d['bytes'] / 2**20:.1f} MiB on disk")
    console.print(f"dataset {ds.get('name')}: {d['n_samples']} tiles of {d['tile_size']} px, "
                  f"{ds.get('magnification')} ({ds.get('um_per_px')} um/px), "
                  f"classes: {', '.join(ds.get('classes', [])) or 'none'}"
                  + ("" if d["ingest_complete"] else "  [red](ingest incomplete)[/red]"))
    console.print("splits: " + ", ".join(f"{k} {v}" for k, v in d["splits"].items()))
    if d["dataset_digest"]:
        console.print(f"images/labels/samples digest {d['dataset_digest']}", highlight=False)
    table = Table("encoder", "fingerprint", "levels (C x h x w)", "dtype", "views", "committed", "MiB")
    for key, g in d["encoders"].items():
        table.add_row(key, g["fingerprint"], "  ".join("x".join(map(str, s)) for s in g["level_shapes"]),
                      g["storage_dtype"], str(g["views"]), f"{g['committed']}/{g['total']}",
                      f"{g['bytes'] / 2**20:.1f}")
    console.print(table if d["encoders"] else "no encoder features yet")
    for key, g in d["encoders"].items():
        versions = ", ".join(f"{k} {v}" for k, v in g["library_versions"].items())
        console.print(f"features/{key}: weights {g['weights_source']}, computed in {g['compute_dtype']}, "
                      f"codec {g['codec_name']}, transform {g['transform_summary']}, "
                      f"made {g['created'] or 'unknown'} ({versions})"
                      + (f", digest {g['digest']}" if g["digest"] else ""), highlight=False)
    for line in d["licence_notices"]:
        console.print(line, highlight=False)


def verify_command(store: Annotated[str, typer.Argument(help="Store folder, .zip or URL.")],
                   expect: Annotated[Optional[str], typer.Option(help="Published store digest (sha256:...) the store must have.")] = None,
                   cache_dir: CacheDir = None,
                   quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False) -> None:
    """Check schema, markers, every chunk's checksum, finite features and the recorded hashes; exit 1 on any problem."""
    from embedstore.store import open_store
    from embedstore.store.verify import verify_store

    use_cache_dir(cache_dir)
    report = verify_store(open_store(store), expect=expect, show_progress=not quiet)
    for key, (done, total) in report.groups.items():
        console.print(f"features/{key}: {done}/{total} tiles committed")
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)
    if report.digest:
        console.print(f"store digest {report.digest}", highlight=False)
    if report.ok:
        console.print(f"ok: {report.tiles_checked} tiles and their committed features read back")
        return
    for problem in report.problems:
        console.print(f"[red]problem:[/red] {problem}", highlight=False)
    raise typer.Exit(1)


def _print_licences(store: str) -> None:
    from embedstore.store import open_store
    from embedstore.store.info import licence_notices

    for line in licence_notices(open_store(store)):
        console.print(line, highlight=False)


def pack_command(store: Annotated[Path, typer.Argument(help="Store folder to pack.")],
                 out: Annotated[Path, typer.Argument(help="The .zip to write (a Zarr zip store, entries stored as they are).")],
                 overwrite: Annotated[bool, typer.Option(help="Replace an existing zip.")] = False,
                 quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False) -> None:
    """Pack a store into one zip that every read command (info, verify, train, evaluate) opens directly."""
    from embedstore.share.pack import pack_store

    _print_licences(str(store))
    path = pack_store(store, out, progress=not quiet, overwrite=overwrite)
    console.print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")


def unpack_command(archive: Annotated[Path, typer.Argument(metavar="ZIP", help="A packed store.")],
                   out: Annotated[Path, typer.Argument(help="New folder for the store.")]) -> None:
    """Unpack a packed store into a folder (entries that would leave it are refused)."""
    from embedstore.share.pack import unpack_store

    console.print(f"unpacked into {unpack_store(archive, out)}")


def push_command(store: Annotated[Path, typer.Argument(help="Store folder to publish.")],
                 url: Annotated[str, typer.Argument(help="hf://datasets/ORG/NAME[/path]")],
                 private: Annotated[bool, typer.Option(help="Create the dataset repo as private.")] = False,
                 dry_run: Annotated[bool, typer.Option(help="Print the upload plan only.")] = False) -> None:
    """Publish a store on the Hugging Face Hub as a few zip parts (within the Hub's file limits); needs HF_TOKEN."""
    from embedstore.share.hub import push, push_plan

    console.print(push_plan(store, url).describe(), highlight=False)  # ends with each group's licence notice
    push(store, url, private=private, dry_run=dry_run)
    console.print("dry run: nothing uploaded" if dry_run else f"pushed {store} to {url}")


def pull_command(url: Annotated[str, typer.Argument(help="hf://datasets/ORG/NAME[/path] of a pushed store.")],
                 out: Annotated[Path, typer.Argument(help="New folder for the store.")],
                 encoder: Annotated[Optional[list[str]], typer.Option(help="Only these feature groups (repeatable; default: all).")] = None) -> None:
    """Download a pushed store from the Hub into a folder; every part is checked against its sha256."""
    from embedstore.share.hub import pull

    console.print(f"pulled into {pull(url, out, encoders=encoder)}")
