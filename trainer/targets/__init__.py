"""Training targets from instance labels: 3-class map, four direction maps, weight, types; their dihedral views."""

from embedstore.trainer.targets.dihedral import dihedral_targets
from embedstore.trainer.targets.maps import (
    BACKGROUND,
    BODY,
    BOUNDARY,
    Targets,
    compute_targets,
    direction_maps,
    regression_weight,
    three_class_map,
)

__all__ = ["BACKGROUND", "BODY", "BOUNDARY", "Targets", "compute_targets", "dihedral_targets", "direction_maps", "regression_weight", "three_class_map"]
