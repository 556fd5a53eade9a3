"""One CSV writer for every table the package writes (training log, evaluation tables)."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write dict rows as CSV: columns in first-seen order, NaN as an empty cell; replaced whole.

    The table is written to a temporary file beside ``path`` and renamed over it, so a kill never
    leaves a half-written table behind.
    """
    path = Path(path)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
    os.replace(tmp, path)
