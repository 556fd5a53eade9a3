"""Maps -> instances and classes (pure numpy / scipy / scikit-image; imports nothing above it)."""

from embedstore.trainer.postprocess.instances import (
    VARIANTS,
    PostprocessParams,
    classify_instances,
    contour_evidence,
    default_min_size,
    gradient_kernels,
    instances_from_maps,
)

__all__ = ["VARIANTS", "PostprocessParams", "classify_instances", "contour_evidence", "default_min_size", "gradient_kernels", "instances_from_maps"]
