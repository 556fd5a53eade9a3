"""Post-processing constants per dataset and magnification (trainer/postprocess/params.py)."""

from __future__ import annotations

import pytest

from embedstore.errors import EmbedstoreError
from embedstore.trainer.postprocess import PostprocessParams, default_min_size


def test_for_dataset_picks_the_reference_constants_per_magnification() -> None:
    p40 = PostprocessParams.for_dataset("40x")
    p20 = PostprocessParams.for_dataset(20)
    assert (p40.struct_radius, p40.erosion_radius, p40.min_marker_size, p40.opening) == (5, 2, 3, "square")
    assert (p20.struct_radius, p20.erosion_radius, p20.min_marker_size, p20.opening) == (3, 1, 2, "cross")
    assert p40.threshold == p20.threshold == 0.57
    assert PostprocessParams.for_dataset("20X", dataset_name="conic").min_size == 26
    assert PostprocessParams.for_dataset("40x", min_size=12, variant="improved").min_size == 12


@pytest.mark.parametrize(("name", "mag", "expected"), [
    ("pannuke", "40x", 50), ("CoNIC", "20x", 26), ("cytodark0", 20, 20), ("cytodark0", "40x", 80),
    (None, "40x", 50), ("consep", 40.0, 50), ("monuseg", "20x", 26), ("anything", "10x", 3),
    ("cytodark0", "10x", 5),
])
def test_default_min_size(name: str | None, mag: str | float, expected: int) -> None:
    assert default_min_size(name, mag) == expected


def test_bad_options_are_refused_with_their_name() -> None:
    with pytest.raises(EmbedstoreError, match="variant"):
        PostprocessParams(variant="hovernet")
    with pytest.raises(EmbedstoreError, match="magnification"):
        PostprocessParams.for_dataset("forty")
    with pytest.raises(EmbedstoreError, match="threshold"):
        PostprocessParams(threshold=1.5)
