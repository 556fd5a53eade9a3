"""`embed bench memory`: peak RSS of `embed train` with the RAM cache off, on stores of 1x, 2x and 4x the tiles.

Streaming training should need memory for a window of blocks, not for the split: its peak should stay
flat (goal: within 10%) as the store grows. Each store is a synthetic one extracted with a registered
encoder (random weights); each training run is a fresh process (``python -m embedstore.cli train``,
one epoch, CPU) that reports its own peak resident set size (``ru_maxrss``) when it ends, so runs do
not see each other's memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from embedstore.extract.pipeline import extract_into_store

_PROBE = (
    "import json, resource, sys\n"
    "from embedstore.cli.app import main\n"
    "code = main(sys.argv[1:])\n"
    "print(json.dumps({'code': code, 'maxrss_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))\n"
)


def _train_peak_rss(store: Path, out: Path, batch_size: int) -> int:
    """Bytes of peak RSS of one `embed train` process (RAM cache off, one epoch)."""
    args = ["train", "--store", str(store), "--out", str(out), "--epochs", "1", "--ram-cache", "off",
            "--device", "cpu", "--batch-size", str(batch_size), "--split-val", "val", "--quiet"]
    result = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, check=False)
    report = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else {"code": -1}
    if report["code"] != 0:
        raise RuntimeError(f"embed train failed: {result.stderr.strip()[-500:]}")
    return int(report["maxrss_kib"]) * 1024


def bench_memory(encoder: str = "vit-b-22k", *, base_tiles: int = 32, tile_size: int = 128, batch_size: int = 4,
                 scales: tuple[int, ...] = (1, 2, 4), workdir: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per scale: tiles, train tiles, peak RSS (bytes) and its ratio to the smallest store's."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="embed-bench-memory-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        for scale in scales:
            store = root / f"x{scale}.zarr"
            extract_into_store(store, encoder, dataset="synthetic", options={"n": base_tiles * scale},
                               tile_size=tile_size, weights="random", device="cpu", show_progress=False)
            peak = _train_peak_rss(store, root / f"run-x{scale}", batch_size)
            rows.append({"scale": scale, "tiles": base_tiles * scale, "peak_rss_bytes": peak})
    for row in rows:
        row["ratio"] = row["peak_rss_bytes"] / rows[0]["peak_rss_bytes"]
    return rows
