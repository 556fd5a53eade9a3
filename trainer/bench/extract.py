"""`embed bench extract`: extraction throughput against the bare encoder forward on the same batches."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedstore.encoders import build_encoder
from embedstore.extract import extract
from embedstore.extract.pipeline import ingest_dataset
from embedstore.store import feature_key, open_store, store_bytes


def bench_extract(encoder: str = "vit-b-22k", n_tiles: int = 64, batch_size: int = 16, device: str = "cpu",
                  workdir: str | Path | None = None) -> dict[str, Any]:
    """Time (a) ``extract`` into a fresh store and (b) the encoder alone on the same in-RAM batches.

    Both arms use the same encoder object, batches and device in one process; the ratio a/b says how much
    the reader, the dtype conversion and the writers cost on top of the forward pass.
    """
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "bench.zarr"
        store = ingest_dataset(path, "synthetic", options={"n": n_tiles}, show_progress=False)
        model = build_encoder(encoder, "random", device=device)
        images = np.asarray(store.array("images")[:])
        with torch.inference_mode():  # warm-up: first-call allocations are not what we measure
            model(torch.from_numpy(images[:batch_size]).to(device))
        t0 = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, n_tiles, batch_size):
                outs = model(torch.from_numpy(images[start:start + batch_size]).to(device))
                _ = [o.cpu() for o in outs]
        bare = time.perf_counter() - t0
        report = extract(open_store(path, mode="r+"), model, batch_size=batch_size, device=device,
                         show_progress=False)
        group = open_store(path).features(feature_key(model.spec.key))
        level_bytes = {
            name: store_bytes(path / "features" / feature_key(model.spec.key) / name) / n_tiles
            for name in sorted(group.array_keys()) if name.startswith("level_")
        }
        image_bytes = store_bytes(path / "images") / n_tiles
    return {
        "encoder": encoder,
        "n_tiles": n_tiles,
        "batch_size": batch_size,
        "device": device,
        "bare_tiles_per_s": n_tiles / bare,
        "extract_tiles_per_s": report.tiles_per_s,
        "ratio": report.tiles_per_s / (n_tiles / bare),
        "bytes_per_tile_per_level": level_bytes,
        "image_bytes_per_tile": image_bytes,
    }
