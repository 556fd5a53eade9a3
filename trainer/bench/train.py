"""`embed bench train`: is training from the store as fast as the decoder alone, and how much faster than
running the frozen encoder online?

For each encoder (random weights), one synthetic store is built and three arms train the same decoder
(same initial weights, same batches in the same order, CPU) for one epoch:

(a) ``store``: features streamed from the on-disk store by the :class:`Loader` (``ram_cache="off"``);
(b) ``ram``: the same batches preloaded as tensors in RAM (the decoder alone, an upper bound for a);
(c) ``online``: the frozen encoder run on the batch's images before every decoder step.

Reported: tiles/s of each arm, a/b (goal >= 0.95), a/c and the ideal a/c = (encoder + decoder time of c) /
decoder time of c (goal a/c >= 0.95 x ideal). Targets are computed in a warm-up epoch of (a) and then
cached, as in training; the store's files may sit in the OS page cache, as they would after the first
epoch of a real run.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedstore.datasets import get_dataset
from embedstore.datasets.base import DatasetInfo, Tile, TileDataset
from embedstore.encoders import FrozenEncoder, build_encoder
from embedstore.extract import extract
from embedstore.store import ingest
from embedstore.trainer.data.batch import Batch
from embedstore.trainer.data.loader import Loader
from embedstore.trainer.fit.options import LossOptions, Optimisation
from embedstore.trainer.fit.seed_state import build_optimizer
from embedstore.trainer.fit.step import train_step
from embedstore.trainer.model.decoder import CellDecoder, DecoderConfig, build_decoder
from embedstore.trainer.model.presets import DecoderPreset

#: ViT-B/16- and ViT-L/16-size registered encoders (random weights; nothing is downloaded).
DEFAULT_ENCODERS = ("vit-b-22k", "uni")


@dataclasses.dataclass
class AllTrain:
    """A dataset with every tile in the train split."""

    base: TileDataset

    @property
    def info(self) -> DatasetInfo:
        return self.base.info

    def __len__(self) -> int:
        return len(self.base)

    def tile(self, i: int) -> Tile:
        return dataclasses.replace(self.base.tile(i), split="train")


def _steps(model: CellDecoder, batches: Iterable[Batch], encoder: FrozenEncoder | None = None,
           images: list[torch.Tensor] | None = None) -> tuple[float, float, float]:
    """Train ``model`` one :func:`train_step` per batch (training's defaults); return (encoder, decoder,
    wall-clock) seconds."""
    start = time.perf_counter()
    optimizer = build_optimizer(model, Optimisation())
    loss = LossOptions()
    enc = dec = 0.0
    for k, batch in enumerate(batches):
        levels = None
        if encoder is not None:
            assert images is not None
            t0 = time.perf_counter()
            with torch.inference_mode():
                levels = [x.float() for x in encoder(images[k])]
            levels = [x.clone() for x in levels]  # leave inference mode: the decoder back-propagates
            enc += time.perf_counter() - t0
        t0 = time.perf_counter()
        train_step(model, optimizer, batch, loss, levels=levels)
        dec += time.perf_counter() - t0
    return enc, dec, time.perf_counter() - start


def bench_encoder(encoder_name: str, *, n_tiles: int = 16, batch_size: int = 4, tile_size: int = 256,
                  decoder: DecoderPreset = "lite", repeats: int = 1, workdir: Path, seed: int = 0,
                  show_progress: bool = False) -> dict[str, Any]:
    """One benchmark row for ``encoder_name`` (see the module docstring); builds its store under ``workdir``.

    ``repeats`` > 1 runs the three arms round robin and keeps each arm's fastest epoch.
    """
    encoder = build_encoder(encoder_name, "random", seed=seed)
    location = workdir / f"{encoder.spec.key}-{n_tiles}x{tile_size}.zarr"
    dataset = AllTrain(get_dataset("synthetic", tile_size=tile_size, n=n_tiles))
    store = ingest(dataset, location, tile_size=tile_size, show_progress=show_progress)
    extract(store, encoder, device="cpu", batch_size=batch_size, show_progress=show_progress)

    streamed = Loader(location, "train", batch_size=batch_size, ram_cache="off", seed=seed, prefetch=0)
    list(streamed.epoch(0))  # warm-up: computes and caches the targets
    preloaded = list(Loader(location, "train", batch_size=batch_size, ram_cache="on", seed=seed).epoch(1))
    pixels = store.array("images")
    images = [torch.from_numpy(np.stack([pixels[int(t)] for t in b.tiles])) for b in preloaded]
    shapes = streamed.level_shapes
    cfg = DecoderConfig(preset=decoder, level_dims=tuple(s[0] for s in shapes),
                        level_grids=tuple(s[1] for s in shapes), n_types=streamed.n_types, tile_size=tile_size)
    torch.manual_seed(seed)
    initial = {k: v.clone() for k, v in build_decoder(cfg).state_dict().items()}

    def fresh() -> CellDecoder:
        model = build_decoder(cfg)
        model.load_state_dict(initial)
        return model.train()

    _steps(fresh(), preloaded[:1])  # warm-up of the kernels
    store_s = ram_s = encoder_s = decoder_s = float("inf")
    for _ in range(repeats):  # round robin, keeping each arm's fastest run: robust to a busy machine
        store_s = min(store_s, _steps(fresh(), streamed.epoch(1))[2])
        ram_s = min(ram_s, _steps(fresh(), preloaded)[2])
        enc, dec, _ = _steps(fresh(), preloaded, encoder.eval(), images)
        if enc + dec < encoder_s + decoder_s:
            encoder_s, decoder_s = enc, dec
    n = sum(len(b) for b in preloaded)
    ideal = (encoder_s + decoder_s) / decoder_s
    row = {
        "encoder": encoder.spec.key, "architecture": encoder.spec.architecture, "tiles": n,
        "batch_size": batch_size, "tile_size": tile_size, "decoder": decoder, "repeats": repeats,
        "store_tiles_per_s": n / store_s, "ram_tiles_per_s": n / ram_s,
        "online_tiles_per_s": n / (encoder_s + decoder_s),
        "online_encoder_s": encoder_s, "online_decoder_s": decoder_s,
        "a_over_b": ram_s / store_s, "a_over_c": (encoder_s + decoder_s) / store_s, "ideal_a_over_c": ideal,
    }
    row["goal_a_over_b"] = row["a_over_b"] >= 0.95
    row["goal_a_over_c"] = row["a_over_c"] >= 0.95 * ideal
    return row


def bench_train(encoders: tuple[str, ...] = DEFAULT_ENCODERS, *, n_tiles: int = 16, batch_size: int = 4,
                tile_size: int = 256, decoder: DecoderPreset = "lite", repeats: int = 1,
                workdir: str | Path | None = None, seed: int = 0, show_progress: bool = True) -> list[dict[str, Any]]:
    """Benchmark rows, one per encoder; stores go to ``workdir`` (a temporary folder when None)."""
    with tempfile.TemporaryDirectory(prefix="embed-bench-train-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        return [bench_encoder(name, n_tiles=n_tiles, batch_size=batch_size, tile_size=tile_size, decoder=decoder,
                              repeats=repeats, workdir=root, seed=seed, show_progress=show_progress)
                for name in encoders]
