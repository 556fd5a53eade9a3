"""`embed evaluate`: score a run's decoders on a split of its store.

Modules by job: score (one image), summary (one seed's set-level numbers, mean and sd over seeds),
stitch (ground truth of stitched images), units (work units and the process pool), outputs
(metrics.json and CSV tables), run (orchestration and min-size tuning).
"""

from embedstore.trainer.evaluate.run import evaluate, min_size_grid
from embedstore.trainer.evaluate.score import ImageScore, score_image, score_maps
from embedstore.trainer.evaluate.stitch import stitch_labels
from embedstore.trainer.evaluate.summary import PROTOCOLS, mean_sd, summarize

__all__ = ["PROTOCOLS", "ImageScore", "evaluate", "mean_sd", "min_size_grid", "score_image",
           "score_maps", "stitch_labels", "summarize"]
