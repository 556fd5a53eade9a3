"""The CLI spells library choices once (cli/choices.py); each must equal the library table it mirrors."""

from __future__ import annotations

from embedstore.cli.choices import BlendWindow, Level, ObjectType, Postprocess, Quantize
from embedstore.imaging.tiling import WINDOWS
from embedstore.store.features import QUANTIZE
from embedstore.trainer.compare import LEVELS
from embedstore.trainer.postprocess import VARIANTS
from embedstore.trainer.predict.export import OBJECT_TYPES


def test_postprocess_choices_are_the_variants() -> None:
    assert tuple(v.value for v in Postprocess) == VARIANTS


def test_object_type_choices_are_the_geojson_object_types() -> None:
    assert tuple(v.value for v in ObjectType) == OBJECT_TYPES


def test_window_choices_are_the_blending_windows() -> None:
    assert tuple(v.value for v in BlendWindow) == WINDOWS


def test_level_choices_are_the_compare_levels() -> None:
    assert tuple(v.value for v in Level) == LEVELS


def test_quantize_choices_are_the_feature_quantizations() -> None:
    assert tuple(v.value for v in Quantize) == QUANTIZE
