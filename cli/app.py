"""`embed`: the command line. Each command parses options and calls one package function."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from embedstore.cli.bench_cmd import bench_app
from embedstore.cli.choices import Quantize
from embedstore.cli.evaluate_cmd import compare_command, evaluate_command
from embedstore.cli.predict_cmd import predict_command
from embedstore.cli.probe_cmd import cells_command, probe_command
from embedstore.cli.study_cmd import study_command
from embedstore.cli.store_cmd import (
    CacheDir,
    info_command,
    pack_command,
    pull_command,
    push_command,
    unpack_command,
    use_cache_dir,
    verify_command,
)
from embedstore.errors import EmbedstoreError
from embedstore.extract.precision import ComputeDtype
from embedstore.trainer.data.memory import RamCache
from embedstore.trainer.fit.options import MsgeMaps
from embedstore.trainer.model.presets import DecoderPreset

if TYPE_CHECKING:  # torch-free import of the command line: the report type only
    from embedstore.trainer.fit.train import TrainReport

app = typer.Typer(
    name="embed",
    help="Run frozen encoders once into a Zarr feature store; train and evaluate cell-segmentation decoders from it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console()


def parse_options(pairs: list[str]) -> dict[str, str]:
    """``["key=value", ...]`` -> dict; a pair without '=' is a user error."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise EmbedstoreError(f"--option {pair!r}: expected KEY=VALUE")
        options[key.strip().replace("-", "_")] = value.strip()
    return options


@app.command()
def extract(
    encoder: Annotated[str, typer.Option(help="Encoder name (see `embed encoders`) or timm:<model name>.")],
    dataset: Annotated[Optional[str], typer.Option(help="Dataset adapter (see `embed datasets`); needed until the store is ingested.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Dataset folder in its native layout.")] = None,
    store: Annotated[Optional[str], typer.Option(help="Store folder, or an s3:// URL every worker reaches (default: ./<dataset>[-<mag>].zarr).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per encoder forward pass.")] = 16,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N].")] = "auto",
    dtype: Annotated[ComputeDtype, typer.Option(help="Compute precision (auto: fp16 on CUDA, fp32 on CPU). Stored as float16 unless fp32.")] = "auto",
    views: Annotated[int, typer.Option(help="1, or 8 to cache all dihedral views for augmentation.")] = 1,
    weights: Annotated[str, typer.Option(help="hub (HF Hub / timm, honours HF_HOME, HF_TOKEN, HF_HUB_OFFLINE) | random | PATH to .safetensors/.pt.")] = "hub",
    seed: Annotated[int, typer.Option(help="Seed for --weights random.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace features of this encoder written with other weights/settings.")] = False,
    magnification: Annotated[Optional[str], typer.Option(help="Dataset magnification where the adapter has several (cytodark0: 20x | 40x).")] = None,
    tile_size: Annotated[int, typer.Option(help="Tile side in pixels.")] = 256,
    stride: Annotated[Optional[int], typer.Option(help="Tile stride (default = tile size; smaller overlaps).")] = None,
    option: Annotated[list[str], typer.Option("--option", "-o", help="Dataset option KEY=VALUE (repeatable).")] = [],
    workers: Annotated[Optional[int], typer.Option(help="Compute on a local dask cluster of N worker processes (on a GPU machine: one per GPU, each pinned to one).")] = None,
    scheduler: Annotated[Optional[str], typer.Option(help="Compute on a running dask cluster: tcp://HOST:PORT of its scheduler (workers must see the store path; see docs/distributed.md).")] = None,
    codec: Annotated[Optional[str], typer.Option(help="Compression of the feature chunks: NAME[:LEVEL][:SHUFFLE] with NAME zstd | lz4 | lz4hc | blosclz | zlib, LEVEL 0-9 (3), SHUFFLE bitshuffle | shuffle | noshuffle (bitshuffle); or none (a crc32c checksum is always kept). E.g. zstd:3:bitshuffle, lz4:5:shuffle, zstd:1. Default: zstd:3:bitshuffle, and zstd:5:bitshuffle with --quantize int8.")] = None,
    quantize: Annotated[Quantize, typer.Option(help="int8: store each channel as int8 codes with a per-channel scale and offset fitted on train tiles (1 byte per value instead of 2); read back as float16.")] = Quantize.none,
    pca: Annotated[Optional[int], typer.Option(help="Keep K principal components per level (fitted on up to 64 train tiles); decoders then read K channels. Combines with --quantize.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Ingest a dataset (once) and write an encoder's four levels for every tile; resumes after a kill."""
    from embedstore.extract.pipeline import default_store_path, extract_into_store

    options = parse_options(option)
    if magnification:
        options["magnification"] = magnification
    if store is None:
        if dataset is None:
            raise EmbedstoreError("give --dataset (to ingest) or --store (an existing store)")
        store = str(default_store_path(dataset, options))
    report = extract_into_store(
        store, encoder, dataset=dataset, data_dir=data_dir, options=options, tile_size=tile_size,
        stride=stride, weights=weights, seed=seed, batch_size=batch_size, device=device, dtype=dtype,
        views=views, overwrite=overwrite, show_progress=not quiet, workers=workers, scheduler=scheduler,
        codec=codec, pca=pca, quantize=None if quantize == Quantize.none else str(quantize),
    )
    if report.tiles_written:
        console.print(f"{store}: features/{report.key}: wrote {report.tiles_written} tiles "
                      f"({report.tiles_per_s:.1f} tiles/s), {report.tiles_skipped} already committed")
    else:
        console.print(f"{store}: features/{report.key}: all {report.tiles_total} tiles already committed")
    if report.worker_peak_rss:
        console.print("peak RSS per worker: " + ", ".join(
            f"{name} {rss / 2**20:.0f} MiB" for name, rss in sorted(report.worker_peak_rss.items())))


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> (0, 1, 2); ``option`` names the flag in the error."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise EmbedstoreError(f"{option} {text!r}: expected comma-separated integers such as 0,1,2") from None


@app.command()
def train(
    store: Annotated[str, typer.Option(help="Store folder, .zip or URL (read only).")],
    encoder: Annotated[Optional[str], typer.Option(help="Feature group to train on (default: the store's only one).")] = None,
    split_train: Annotated[str, typer.Option(help="Training split.")] = "train",
    split_val: Annotated[str, typer.Option(help="Validation split (early stopping, LR schedule).")] = "val",
    seeds: Annotated[str, typer.Option(help="Decoder seeds trained together, each batch read once: 0,1,2.")] = "0",
    decoder: Annotated[DecoderPreset, typer.Option(help="Decoder widths: lite (fast) or cisca (research-note widths).")] = "lite",
    levels: Annotated[Optional[str], typer.Option(help="Encoder levels the decoder reads, e.g. 0,1,2,3 (default) or 2,3; none = the no-encoder baseline (RGB stem only).")] = None,
    variant: Annotated[list[str], typer.Option("--variant", help="Train several decoder variants in one pass (repeatable), each in --out/<name>/: KEY=VALUE pairs joined by ':' with keys levels (default 0,1,2,3; none), decoder (default --decoder) and name (default <decoder>-L<levels>), e.g. --variant levels=3 --variant levels=2,3:decoder=cisca --variant levels=none.")] = [],
    epochs: Annotated[int, typer.Option(help="Maximum epochs (early stopping may end sooner).")] = 100,
    batch_size: Annotated[int, typer.Option(help="Tiles per batch.")] = 4,
    lr: Annotated[float, typer.Option(help="Adam (amsgrad) learning rate.")] = 5e-4,
    stop_patience: Annotated[int, typer.Option(help="Epochs without val improvement before stopping.")] = 20,
    lr_patience: Annotated[int, typer.Option(help="Epochs without val improvement before halving the LR.")] = 10,
    clip_norm: Annotated[Optional[float], typer.Option(help="Per-tensor gradient L2-norm clip (CISCA: 0.001); off by default.")] = None,
    msge_maps: Annotated[MsgeMaps, typer.Option(help="Direction maps in the gradient loss: all, or diagonals (CISCA).")] = "all",
    data_seed: Annotated[int, typer.Option(help="Seed of the data order and drawn views (independent of --seeds).")] = 0,
    ram_cache: Annotated[RamCache, typer.Option(help="Hold the split's features in RAM (auto: when they fit).")] = "auto",
    require_complete: Annotated[bool, typer.Option(help="Refuse a partly extracted feature group.")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N].")] = "auto",
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/train"),
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print parameter counts and exit.")] = False,
    cache_dir: CacheDir = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Train decoders from cached features; writes config, checkpoints, metrics log and curves to --out.

    With --variant, every variant trains every seed on the same batches (the union of their levels is read
    once) and writes its own run folder --out/<name>/.
    """
    from embedstore.trainer.fit.options import DataOptions, LossOptions, Optimisation
    from embedstore.trainer.fit.train import TrainInterrupted, train_variants
    from embedstore.trainer.fit.train import train as run_training
    from embedstore.trainer.fit.variants import parse_levels, parse_variant

    if variant and levels is not None:
        raise EmbedstoreError("give --levels or --variant levels=..., not both")
    use_cache_dir(cache_dir)
    common = dict(
        encoder_key=encoder, seeds=parse_ints(seeds, "--seeds"), epochs=epochs,
        data=DataOptions(split_train=split_train, split_val=split_val, data_seed=data_seed, batch_size=batch_size,
                         ram_cache=ram_cache, require_complete=require_complete),
        optimisation=Optimisation(lr=lr, clip_norm=clip_norm, lr_patience=lr_patience, stop_patience=stop_patience),
        loss=LossOptions(msge_maps=msge_maps), device=device, resume=resume, dry_run=dry_run,
        show_progress=not quiet, say=None if quiet else Console(stderr=True).print,
    )
    try:
        if variant:
            reports = train_variants(store, out, [parse_variant(v, decoder) for v in variant], **common)
        else:
            reports = [run_training(store, out, decoder=decoder, levels=parse_levels(levels or "0,1,2,3"),
                                    **common)]
    except TrainInterrupted as stop:
        Console(stderr=True).print(str(stop), highlight=False)
        raise typer.Exit(130) from None
    for report in reports:
        _print_train_report(report, report.variant if variant else None)


def _print_train_report(report: TrainReport, variant: str | None) -> None:
    """Sizes, then (unless a dry run) the per-seed table and the speed of one variant's run."""
    title = f"variant {variant} (decoder {report.decoder['preset']})" if variant else f"decoder {report.decoder['preset']}"
    console.print(f"{title}: {report.parameters:,} trainable parameters per seed; "
                  f"{report.train_tiles} train / {report.val_tiles} val tiles"
                  + (f", {report.missing_tiles} not yet extracted" if report.missing_tiles else ""))
    if report.dry_run:
        return
    table = Table("seed", "best epoch", "val loss", "val dir. MAE (cells)", "val 3-class acc", "epochs")
    for r in report.seeds:
        table.add_row(str(r.seed), str(r.best_epoch), f"{r.best_val_loss:.4f}", f"{r.val_direction_mae:.3f}",
                      f"{r.val_accuracy:.3f}", f"{r.epochs_run}" + (" (early stop)" if r.stopped_early else ""))
    console.print(table)
    console.print(f"{report.tiles_per_s:.1f} tiles/s; run folder {report.run_dir}")


app.command("info")(info_command)
app.command("verify")(verify_command)


@app.command()
def encoders() -> None:
    """List registered encoders (any timm model also works as timm:<name>)."""
    from embedstore.encoders import list_specs

    table = Table("name", "source", "family", "levels", "dims", "grid @256", "licence")
    for s in list_specs():
        table.add_row(s.key, s.source, s.family, ",".join(map(str, s.levels)), ",".join(map(str, s.dims)),
                      ",".join(map(str, s.grids)), s.licence + (" (gated)" if s.gated else ""))
    console.print(table)


@app.command()
def datasets() -> None:
    """List dataset adapters and their options."""
    from embedstore.datasets import list_datasets

    table = Table("name", "description")
    for name, description in list_datasets():
        table.add_row(name, description)
    console.print(table)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo store and runs.")] = Path("demo-out"),
    tiles: Annotated[int, typer.Option(help="Synthetic tiles (60/20/20 train/val/test).")] = 64,
    tile_size: Annotated[int, typer.Option(help="Tile side; 128 keeps the demo within minutes on a laptop CPU.")] = 128,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 20,
) -> None:
    """Pipeline demo on the embedded default: synthetic H&E-like tiles, tiny random-weight encoder.

    Runs extract -> train -> evaluate end to end in a few minutes on a laptop CPU. The scores show the
    pipeline works; they say nothing about real encoders (the encoder has random weights).
    """
    from embedstore.trainer.demo import run_demo

    run_demo(out, tiles=tiles, tile_size=tile_size, epochs=epochs, say=console.print)


app.command("evaluate")(evaluate_command)
app.command("compare")(compare_command)
app.command("predict")(predict_command)
app.command("cells")(cells_command)
app.command("probe")(probe_command)
app.command("study")(study_command)
app.command("pack")(pack_command)
app.command("unpack")(unpack_command)
app.command("push")(push_command)
app.command("pull")(pull_command)
app.add_typer(bench_app, name="bench")



def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors print one line and exit non-zero, never a traceback."""
    err = Console(stderr=True)
    try:
        code = app(args=argv, prog_name="embed", standalone_mode=False)
    except EmbedstoreError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        return 1
    except typer.exceptions.Abort:
        err.print("interrupted; committed work is kept and the same command resumes", highlight=False)
        return 130
    except typer.exceptions.TyperException as e:  # usage errors: unknown option, bad value, missing argument
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `embed` or `embed bench`: show the help
            console.print(e.format_message(), highlight=False)
            return 0
        ctx = getattr(e, "ctx", None)
        where = f"embed {ctx.command_path.split(' ', 1)[1]}" if ctx and " " in ctx.command_path else "embed"
        err.print(f"[red]error:[/red] {e.format_message()} (see `{where} --help`)", highlight=False,
                  soft_wrap=True)
        return int(getattr(e, "exit_code", 2))
    except KeyboardInterrupt:
        err.print("interrupted; committed work is kept and the same command resumes", highlight=False)
        return 130
    return code if isinstance(code, int) else 0
