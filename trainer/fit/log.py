"""The metrics log of a run: ``metrics.jsonl`` (appended, one row per epoch and seed) and its CSV copy."""

from __future__ import annotations

import json
from typing import Any

from embedstore.tables import write_csv
from embedstore.trainer.run_folder import RunDir


def epoch_row(epoch: int, seed: int, train_means: dict[str, float], val: dict[str, float], lr: float,
              tiles: int, seconds: float) -> dict[str, Any]:
    """One log row: epoch, seed, mean train terms (``train_<term>``), validation metrics, lr and speed."""
    return {"epoch": epoch, "seed": seed, **train_means, **val, "lr": lr,
            "tiles_per_s": tiles / seconds if seconds else 0.0, "seconds": seconds}


class MetricsLog:
    """Rows of a run's metrics log; every change rewrites the CSV table with :func:`write_csv`."""

    def __init__(self, run: RunDir) -> None:
        self.run = run

    def rows(self) -> list[dict[str, Any]]:
        """Every logged row, in order (empty when nothing was logged yet)."""
        path = self.run.metrics_log
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def append(self, rows: list[dict[str, Any]]) -> None:
        with open(self.run.metrics_log, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        write_csv(self.run.metrics_table, self.rows())

    def truncate(self, epoch: int) -> None:
        """Drop rows of epochs >= ``epoch`` (written before a checkpoint that a kill prevented)."""
        rows = [r for r in self.rows() if int(r["epoch"]) < epoch]
        self.run.metrics_log.write_text("".join(json.dumps(r) + "\n" for r in rows))
        write_csv(self.run.metrics_table, rows)
