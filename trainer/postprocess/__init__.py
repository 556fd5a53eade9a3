"""Maps -> instances and classes (pure numpy / scipy / scikit-image; imports nothing above it)."""

from embedstore.imaging.gradients import gradient_kernels
from embedstore.trainer.postprocess.cells import Cells, cells_from_maps
from embedstore.trainer.postprocess.classify import classify_instances
from embedstore.trainer.postprocess.evidence import contour_evidence
from embedstore.trainer.postprocess.instances import instances_from_maps
from embedstore.trainer.postprocess.params import VARIANTS, PostprocessParams, default_min_size

__all__ = ["VARIANTS", "Cells", "PostprocessParams", "cells_from_maps", "classify_instances", "contour_evidence",
           "default_min_size", "gradient_kernels", "instances_from_maps"]
