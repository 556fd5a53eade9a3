"""Integrity check of a store: schema, ingest markers, and every committed feature chunk decodes finite."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from embedstore.progress import progress_bar
from embedstore.store import Store


@dataclass
class VerifyReport:
    """Problems found (empty = healthy) and what was read."""

    problems: list[str] = field(default_factory=list)
    tiles_checked: int = 0
    groups: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(store: Store, show_progress: bool = True) -> VerifyReport:
    """Read every ingested block and every committed feature shard; report what does not decode or is not finite."""
    report = VerifyReport()
    if not store.ingest_complete:
        ingested = np.asarray(store.array("samples/ingested")[:])
        report.problems.append(f"ingest incomplete: {int(ingested.sum())}/{ingested.size} blocks written")
    blocks = store.blocks()
    groups = {key: store.features(key) for key in store.feature_keys()}
    total = len(blocks) * (1 + len(groups))
    with progress_bar("verify", total=total, unit="shards", enabled=show_progress) as advance:
        ingested = np.asarray(store.array("samples/ingested")[:])
        for k, block in enumerate(blocks):
            if ingested[k]:
                try:
                    store.array("images")[block]
                    store.array("labels/instance")[block]
                    report.tiles_checked += block.stop - block.start
                except Exception as err:  # a corrupt chunk surfaces as any codec error
                    report.problems.append(f"tiles {block.start}-{block.stop - 1}: images/labels unreadable ({err})")
            advance(1)
        for key, group in groups.items():
            done = np.asarray(group["done"][:]).all(axis=1)
            report.groups[key] = (int(done.sum()), int(done.size))
            levels = sorted(name for name in group.array_keys() if name.startswith("level_"))
            for block in blocks:
                if done[block].any():
                    for name in levels:
                        try:
                            values = np.asarray(group[name][block])[done[block]]
                        except Exception as err:
                            report.problems.append(f"features/{key}/{name} tiles {block.start}-{block.stop - 1}: "
                                                   f"unreadable ({err})")
                            continue
                        if not np.isfinite(values).all():
                            report.problems.append(f"features/{key}/{name} tiles {block.start}-{block.stop - 1}: "
                                                   "non-finite values")
                advance(1)
    return report
