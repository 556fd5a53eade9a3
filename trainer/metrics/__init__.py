"""Instance segmentation, detection and counting metrics (pure numpy; imports nothing above it)."""

from embedstore.trainer.metrics.instance_metrics import (
    aggregate_pannuke,
    aggregated_jaccard_index,
    aggregated_jaccard_index_plus,
    conic_mpq_plus,
    count_r2,
    detection_f1,
    detection_radius,
    dice,
    instance_centroids,
    instance_classes,
    instance_counts,
    match_centroids,
    panoptic_quality,
    pannuke_pq,
)

__all__ = ["aggregate_pannuke", "aggregated_jaccard_index", "aggregated_jaccard_index_plus", "conic_mpq_plus", "count_r2", "detection_f1", "detection_radius", "dice", "instance_centroids", "instance_classes", "instance_counts", "match_centroids", "panoptic_quality", "pannuke_pq"]
