"""`embed evaluate`: score a run's decoders on a split of its store."""

from embedstore.trainer.evaluate.run import (
    PROTOCOLS,
    ImageScore,
    evaluate,
    mean_sd,
    min_size_grid,
    score_image,
    summarize,
    stitch_labels,
)

__all__ = ["PROTOCOLS", "ImageScore", "evaluate", "mean_sd", "min_size_grid", "score_image", "summarize", "stitch_labels"]
