"""The memory policy of the loader: how much memory is left, and whether a split's features fit in it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

RamCache = Literal["auto", "on", "off"]
"""``on``: hold the split in RAM; ``off``: stream it per epoch; ``auto``: ``on`` when it fits the budget."""


def available_memory() -> int:
    """Bytes of memory this process can still use: MemAvailable, capped by a cgroup v2 limit if any."""
    avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            avail = min(avail, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(int(avail), 0)


def memory_budget(fraction: float) -> int:
    """Bytes that ``fraction`` of the available memory allows (RAM cache and target cache)."""
    return int(fraction * available_memory())


def tile_bytes(*, level_sizes: list[int], itemsize: int, views: int, tile_size: int, has_types: bool) -> int:
    """RAM of one tile: ``views`` views of the used levels (``level_sizes``: C*h*w each), its RGB image and
    its targets (contour int8, 4 float32 direction maps, float32 weight, int8 types)."""
    s = tile_size
    features = sum(level_sizes) * views * itemsize
    targets = s * s * (1 + 16 + 4 + (1 if has_types else 0))
    return features + 3 * s * s + targets


def use_ram(mode: RamCache, *, need_bytes: int, fraction: float) -> bool:
    """The RAM decision: ``on``/``off`` as asked; ``auto`` when ``need_bytes`` fit ``fraction`` of the memory."""
    if mode != "auto":
        return mode == "on"
    return need_bytes <= fraction * available_memory()
