"""Array helpers every floor shares: dihedral views, tiling and window blending, morphology."""
