"""Instance segmentation, detection and counting metrics with the published protocols.

Pure numpy/scipy, importing nothing else from the package, so a user can score any pair of
integer instance maps (0 = background, any non-negative ids, not necessarily 1..N) without
torch. Every definition, its empty-case handling and where it departs from the reference code
is written down in docs/metrics.md.

Per image: `panoptic_quality`, `aggregated_jaccard_index`, `aggregated_jaccard_index_plus`,
`dice`, `pannuke_pq`. Over a set: `aggregate_pannuke` (PanNuke bPQ/mPQ, image and tissue
protocols), `conic_mpq_plus` (CoNIC mPQ+), `count_r2` (CoNIC R2), `detection_f1` (HoVer-Net
detection and per-class F1).

Count level, for callers that match once per image and pool over a set themselves (``embed
evaluate``): `pq_from_counts`, `class_match_counts` -> `pannuke_from_counts` (per image) and, summed
over images, `mpq_plus_from_counts`; `match_instances` -> `pool_matches` -> `detection_from_classes`.

Modules: overlap (checks, dense ids, contingency table), panoptic, jaccard, pannuke, conic, counts,
detection, reductions (the one `nanmean`).
"""

from embedstore.trainer.metrics.conic import conic_mpq_plus, mpq_plus_from_counts
from embedstore.trainer.metrics.counts import count_r2, counts_per_class, instance_classes, instance_counts
from embedstore.trainer.metrics.detection import (
    MatchedClasses,
    detection_f1,
    detection_from_classes,
    detection_radius,
    instance_centroids,
    match_centroids,
    match_instances,
    pool_matches,
)
from embedstore.trainer.metrics.jaccard import aggregated_jaccard_index, aggregated_jaccard_index_plus, dice
from embedstore.trainer.metrics.pannuke import aggregate_pannuke, pannuke_from_counts, pannuke_pq
from embedstore.trainer.metrics.panoptic import class_match_counts, panoptic_quality, pq_from_counts

__all__ = [
    "MatchedClasses",
    "aggregate_pannuke",
    "aggregated_jaccard_index",
    "aggregated_jaccard_index_plus",
    "class_match_counts",
    "conic_mpq_plus",
    "count_r2",
    "counts_per_class",
    "detection_f1",
    "detection_from_classes",
    "detection_radius",
    "dice",
    "instance_centroids",
    "instance_classes",
    "instance_counts",
    "match_centroids",
    "match_instances",
    "mpq_plus_from_counts",
    "pannuke_from_counts",
    "pannuke_pq",
    "panoptic_quality",
    "pool_matches",
    "pq_from_counts",
]
