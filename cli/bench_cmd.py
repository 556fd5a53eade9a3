"""`embed bench ...`: every benchmark subcommand; each parses options, calls `embedstore.trainer.bench`, prints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from embedstore.cli.choices import BlendWindow, Postprocess
from embedstore.trainer.model.presets import DecoderPreset

console = Console()

bench_app = typer.Typer(help="Benchmarks that print ratios measured in one run.", no_args_is_help=True)


@bench_app.command("extract")
def bench_extract_cmd(
    encoder: Annotated[str, typer.Option(help="Encoder (random weights).")] = "vit-b-22k",
    n_tiles: Annotated[int, typer.Option(help="Synthetic tiles.")] = 64,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 16,
    device: Annotated[str, typer.Option(help="cpu | cuda.")] = "cpu",
) -> None:
    """Extraction tiles/s vs the bare encoder forward on the same batches; bytes per tile per level."""
    from embedstore.trainer.bench.extract import bench_extract

    r = bench_extract(encoder, n_tiles=n_tiles, batch_size=batch_size, device=device)
    console.print(f"{r['encoder']} on {r['device']}, {r['n_tiles']} tiles, batch {r['batch_size']}")
    console.print(f"bare encoder forward: {r['bare_tiles_per_s']:.2f} tiles/s")
    console.print(f"extract (read + forward + write): {r['extract_tiles_per_s']:.2f} tiles/s")
    console.print(f"ratio extract/bare: {r['ratio']:.3f}")
    console.print("bytes per tile: images " + f"{r['image_bytes_per_tile']:.0f}, " + ", ".join(
        f"{k} {v:.0f}" for k, v in r["bytes_per_tile_per_level"].items()))


@bench_app.command("postprocess")
def bench_postprocess_cmd(
    n_tiles: Annotated[int, typer.Option(help="Tiles of realistic maps.")] = 64,
    variant: Annotated[Optional[Postprocess], typer.Option(help="One variant (default: all three).")] = None,
) -> None:
    """Post-processing milliseconds per 256x256 tile on one core (goal <= 20 ms)."""
    from embedstore.trainer.bench.postprocess import benchmark_postprocess

    for name in [variant] if variant else list(Postprocess):
        r = benchmark_postprocess(n_tiles, name.value)
        console.print(f"{name}: {r['ms_per_tile']:.1f} ms/tile wall, {r['cpu_ms_per_tile']:.1f} ms/tile CPU "
                      f"({r['n_tiles']} tiles, {r['instances_per_tile']:.0f} cells/tile)")


@bench_app.command("train")
def bench_train_cmd(
    encoders: Annotated[str, typer.Option(help="Comma-separated encoders (random weights).")] = "vit-b-22k,uni",
    n_tiles: Annotated[int, typer.Option(help="Synthetic tiles per encoder.")] = 16,
    batch_size: Annotated[int, typer.Option(help="Tiles per batch.")] = 4,
    decoder: Annotated[DecoderPreset, typer.Option(help="Decoder widths.")] = "lite",
    repeats: Annotated[int, typer.Option(help="Runs of each arm, taken in turn; the fastest counts.")] = 3,
) -> None:
    """Training tiles/s from (a) the on-disk store, (b) features in RAM, (c) the encoder run online."""
    from embedstore.trainer.bench.train import bench_train

    rows = bench_train(tuple(e for e in encoders.split(",") if e), n_tiles=n_tiles, batch_size=batch_size,
                       decoder=decoder, repeats=repeats)
    table = Table("encoder", "a store t/s", "b RAM t/s", "c online t/s", "a/b", "a/c", "ideal a/c", "goals")
    for r in rows:
        table.add_row(r["encoder"], f"{r['store_tiles_per_s']:.2f}", f"{r['ram_tiles_per_s']:.2f}",
                      f"{r['online_tiles_per_s']:.2f}", f"{r['a_over_b']:.3f}", f"{r['a_over_c']:.2f}",
                      f"{r['ideal_a_over_c']:.2f}",
                      "ok" if r["goal_a_over_b"] and r["goal_a_over_c"] else "missed")
    console.print(table)


@bench_app.command("evaluate")
def bench_evaluate_cmd(
    n_tiles: Annotated[int, typer.Option(help="256 px tiles to post-process and score.")] = 1000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    postprocess: Annotated[Postprocess, typer.Option(help="cisca | improved | nocut.")] = Postprocess.cisca,
) -> None:
    """Time evaluate's post-processing + scoring stage on synthetic model-like maps (decoder excluded)."""
    from embedstore.trainer.bench.evaluate import bench_evaluate

    r = bench_evaluate(n_tiles, workers=workers, variant=postprocess.value)
    console.print(f"{r['n_tiles']} tiles, {r['workers']} workers, {r['variant']}: {r['seconds']:.1f} s "
                  f"({r['tiles_per_s']:.1f} tiles/s; {r['seconds_per_1000']:.1f} s per 1,000 tiles)")


@bench_app.command("stitch-oracle")
def bench_stitch_oracle_cmd(
    data_dir: Annotated[Path, typer.Option(help="CoNSeP folder (Test/Images, Test/Labels).")],
    tile: Annotated[int, typer.Option(help="Tile side in pixels.")] = 256,
    stride: Annotated[Optional[list[int]], typer.Option(help="Tile step; repeat for several (default: the tile size, then half of it).")] = None,
    window: Annotated[Optional[BlendWindow], typer.Option(help="Blending window (default: both).")] = None,
    variant: Annotated[Optional[Postprocess], typer.Option(help="Post-processing variant (default: all three).")] = None,
    min_size: Annotated[int, typer.Option(help="Minimum cell size in pixels (the oracle protocol's 10).")] = 10,
    images: Annotated[Optional[int], typer.Option(help="Only the first N Test images (default: all).")] = None,
) -> None:
    """Oracle bPQ per tile and on stitched whole images: exact targets as maps, so any gap is lost at tile borders."""
    from embedstore.trainer.bench.stitch_oracle import bench_stitch_oracle

    table = Table("variant", "stride", "window", "tiles", "images", "per-tile bPQ", "stitched bPQ", "gap")
    for chosen in [variant] if variant else list(Postprocess):
        for step in stride or [tile, max(1, tile // 2)]:
            for blend in [window] if window else list(BlendWindow):
                r = bench_stitch_oracle(data_dir, tile=tile, stride=step, window=blend.value, variant=chosen.value,
                                        min_size=min_size, images=images, show_progress=True)
                table.add_row(chosen.value, str(r["stride"]), blend.value, str(r["n_tiles"]), str(r["n_images"]),
                              f"{r['per_tile_bpq']:.4f}", f"{r['stitched_bpq']:.4f}", f"{r['gap']:+.4f}")
    console.print(table)


@bench_app.command("checksums")
def bench_checksums_cmd(
    encoder: Annotated[str, typer.Option(help="Encoder (random weights).")] = "vit-b-22k",
    n_tiles: Annotated[int, typer.Option(help="Synthetic tiles.")] = 32,
    batch_size: Annotated[int, typer.Option(help="Tiles per batch.")] = 4,
    repeats: Annotated[int, typer.Option(help="Epochs of each arm, taken in turn; the fastest counts.")] = 3,
) -> None:
    """Training-loader tiles/s with and without the per-chunk crc32c checksums (RAM cache off, no decoder)."""
    from embedstore.trainer.bench.checksums import bench_checksums

    r = bench_checksums(encoder, n_tiles=n_tiles, batch_size=batch_size, repeats=repeats)
    console.print(f"{r['encoder']}, {r['tiles']} tiles of {r['tile_size']} px, batch {r['batch_size']}, "
                  f"best of {r['repeats']}")
    console.print(f"loader with checksums: {r['with_checksums_tiles_per_s']:.1f} tiles/s; without: "
                  f"{r['without_checksums_tiles_per_s']:.1f} tiles/s; ratio with/without {r['ratio']:.3f}")
    console.print(f"finite / missing-tile check: {100 * r['finite_check_share']:.1f}% of a checked feature read")


@bench_app.command("io")
def bench_io_cmd(
    n_tiles: Annotated[int, typer.Option(help="Feature tiles written per run (16 per shard).")] = 64,
    workers: Annotated[int, typer.Option(help="Writers from 1 up to this many, as threads and as processes.")] = 2,
    channels: Annotated[int, typer.Option(help="Channels of the feature tile (768 = ViT-B).")] = 768,
    grid: Annotated[int, typer.Option(help="Token grid side (16 = 256 px at patch 16).")] = 16,
) -> None:
    """Store write and read MB/s per codec for 1..N writer threads and processes (one writer per shard).

    "x one writer" of the "fill check" row is the gain of extraction's write path (no fill-value check)
    over zarr's default; writer processes encode with one zarr thread each (see docs/benchmarks.md).
    """
    from embedstore.trainer.bench.io import bench_io

    rows = bench_io(n_tiles, shape=(channels, grid, grid), max_workers=workers)
    table = Table("codec", "writers", "write MB/s", "tiles/s", "x one writer", "read MB/s (first, again)",
                  "stored / raw bytes")
    for r in rows:
        table.add_row(r["codec"], f"{r['writers']} {r['kind']}", f"{r['write_mb_s']:.0f}",
                      f"{r['write_tiles_per_s']:.0f}", f"{r['speedup']:.2f}",
                      f"{r['read_first_mb_s']:.0f}, {r['read_again_mb_s']:.0f}",
                      f"{r['stored_bytes_per_tile'] / r['raw_bytes_per_tile']:.2f}")
    console.print(table)


@bench_app.command("memory")
def bench_memory_cmd(
    encoder: Annotated[str, typer.Option(help="Encoder (random weights).")] = "vit-b-22k",
    base_tiles: Annotated[int, typer.Option(help="Tiles of the smallest store (then 2x and 4x).")] = 32,
    tile_size: Annotated[int, typer.Option(help="Tile side in pixels.")] = 128,
) -> None:
    """Peak RSS of `embed train` with the RAM cache off on stores of 1x, 2x and 4x the tiles (goal: flat within 10%)."""
    from embedstore.trainer.bench.memory import bench_memory

    rows = bench_memory(encoder, base_tiles=base_tiles, tile_size=tile_size)
    table = Table("store", "tiles", "peak RSS MiB", "x smallest")
    for r in rows:
        table.add_row(f"{r['scale']}x", str(r["tiles"]), f"{r['peak_rss_bytes'] / 2**20:.0f}", f"{r['ratio']:.3f}")
    console.print(table)
    worst = max(r["ratio"] for r in rows)
    console.print(f"goal flat within 10%: {'ok' if worst <= 1.10 else 'missed'} (largest ratio {worst:.3f})")
