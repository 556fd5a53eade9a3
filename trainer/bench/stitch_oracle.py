"""`embed bench stitch-oracle`: what tiling and blending alone cost, measured with exact targets as maps.

Each CoNSeP Test image is cut into tiles as ingest cuts it (:func:`embedstore.datasets.consep.consep`, the
``"border"`` tile policy, instances relabelled per tile); each tile's exact training targets
(:func:`embedstore.trainer.targets.oracle.oracle_maps` of its relabelled labels) stand in for a decoder's
maps. The per-tile oracle scores every tile alone; the stitched oracle blends the tiles' maps into the
whole image with the one blender (:class:`embedstore.trainer.inference.maps.MapBlender`, window
``"uniform"`` or ``"spline"``), post-processes it once and scores it against the tiles' labels stitched
back (:func:`embedstore.trainer.evaluate.stitch_labels`), exactly as ``embed evaluate`` scores stitched
images. With perfect maps, any gap between the two is lost at tile borders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedstore.datasets.consep import consep
from embedstore.imaging.tiling import Window, grid_origins
from embedstore.progress import progress_bar
from embedstore.trainer.evaluate import ImageScore, score_maps, stitch_labels, summarize
from embedstore.trainer.inference.maps import MapBlender, TileMaps
from embedstore.trainer.metrics import detection_radius
from embedstore.trainer.postprocess import PostprocessParams
from embedstore.trainer.targets.oracle import oracle_maps

#: Minimum cell size of the oracle protocol (docs/postprocess.md, "Oracle check").
ORACLE_MIN_SIZE = 10


def bench_stitch_oracle(data_dir: str | Path, *, tile: int = 256, stride: int | None = None,
                        window: Window = "uniform", variant: str = "cisca", min_size: int = ORACLE_MIN_SIZE,
                        images: int | None = None, show_progress: bool = False) -> dict[str, Any]:
    """Per-tile and stitched oracle binary PQ on CoNSeP Test whole images.

    Parameters
    ----------
    data_dir : CoNSeP in its native layout (``Test/Images/*.png``, ``Test/Labels/*.mat``).
    tile, stride : ingest tiling (stride None = ``tile``: no overlap but the border-aligned last tile).
    window : blending window of the stitched maps, ``"uniform"`` (plain mean) or ``"spline"``.
    variant : post-processing variant; the 40x constants with ``min_size``.
    images : score only the first this many Test images (natural order); None = all.

    Returns
    -------
    ``per_tile_bpq`` and ``stitched_bpq`` (bPQ averaged over tiles / images with cells, as
    :func:`~embedstore.trainer.evaluate.summarize`), their difference ``gap`` (stitched - per tile), the
    counts ``n_images``, ``n_tiles``, ``n_true_stitched`` and the settings.
    """
    dataset = consep(Path(data_dir), tile_size=tile, stride=stride)
    magnification = dataset.info.magnification
    params = [PostprocessParams.for_dataset(magnification, min_size=min_size, variant=variant)]
    radius = detection_radius(dataset.info.um_per_px)
    first_tile, sources = 0, []
    for source in dataset.sources:  # tiles are numbered source by source, row-major within a source
        count = len(grid_origins(source.shape, dataset.tile_size, dataset.stride))
        if source.split == "test":
            sources.append((source, range(first_tile, first_tile + count)))
        first_tile += count
    sources = sources[:images]
    tile_scores: list[ImageScore] = []
    image_scores: list[ImageScore] = []
    with progress_bar("stitch oracle", total=sum(len(r) for _, r in sources), unit="tiles",
                      enabled=show_progress) as advance:
        for source, indices in sources:
            tiles = [dataset.tile(i) for i in indices]
            blender = MapBlender(source.shape, 0, window=window)
            for t in tiles:
                contour, directions = oracle_maps(t.instance, magnification)
                maps = TileMaps(contour, directions, None)
                tile_scores.extend(score_maps(maps, t.instance, None, params, 0, radius))
                blender.add(maps, t.origin)
                advance(1)
            truth, _ = stitch_labels([t.instance for t in tiles], [t.origin for t in tiles], source.shape)
            image_scores.extend(score_maps(blender.result(), truth, None, params, 0, radius))
    per_tile = summarize(tile_scores, ["consep"] * len(tile_scores), [])
    stitched = summarize(image_scores, ["consep"] * len(image_scores), [])
    return {"tile": tile, "stride": dataset.stride, "window": window, "variant": variant, "min_size": min_size,
            "n_images": len(image_scores), "n_tiles": len(tile_scores),
            "n_tiles_scored": int(per_tile["n_images_scored"]), "n_true_stitched": int(stitched["n_true"]),
            "per_tile_bpq": per_tile["bpq"], "stitched_bpq": stitched["bpq"],
            "gap": stitched["bpq"] - per_tile["bpq"]}
