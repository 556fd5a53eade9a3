"""`load_plan`: PLAN.toml -> a checked StudyPlan; every bad key is a one-line error that names it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from embedstore.errors import EmbedstoreError
from embedstore.trainer.study.plan import BASELINE, EncoderPlan, load_plan
from embedstore.trainer.study.steps import dataset_signature

GOOD = """
out = "results"
seeds = [0, 1]
[defaults]
epochs = 3
tile_size = 64
postprocess = "improved"
[[dataset]]
name = "syn"
adapter = "synthetic"
options = { n = 10 }
[[dataset]]
adapter = "folder"
data_dir = "data/folder"
store = "elsewhere/f.zarr"
tile_size = 128
[[encoder]]
name = "tiny-vit"
weights = "random"
seed = 3
[[variant]]
name = "deep"
levels = [2, 3]
decoder = "cisca"
[[variant]]
levels = "0,1,2,3"
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "data" / "folder").mkdir(parents=True, exist_ok=True)
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


def test_a_plan_reads_paths_relative_to_its_file_and_fills_defaults(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, GOOD))
    assert plan.out == tmp_path / "results"
    syn, folder = plan.datasets
    assert (syn.name, syn.adapter, syn.data_dir, syn.options) == ("syn", "synthetic", None, {"n": 10})
    assert syn.store == tmp_path / "results" / "stores" / "syn.zarr" and syn.tile_size == 64
    assert (folder.name, folder.data_dir, folder.store, folder.tile_size) == (
        "folder", tmp_path / "data" / "folder", tmp_path / "elsewhere" / "f.zarr", 128)
    assert [(e.name, e.weights, e.seed, e.key) for e in plan.encoders] == [("tiny-vit", "random", 3, "tiny-vit")]
    assert [(v.name, v.preset, v.levels) for v in plan.variants] == [("deep", "cisca", (2, 3)),
                                                                     ("lite-L0123", "lite", (0, 1, 2, 3))]
    s = plan.settings
    assert (s.seeds, s.epochs, s.postprocess, s.views, s.batch_size_train) == ((0, 1), 3, "improved", 1, 4)


def test_the_baseline_is_added_with_the_first_variants_decoder(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, GOOD))
    assert (plan.baseline.name, plan.baseline.preset, plan.baseline.levels) == (BASELINE, "cisca", ())


def test_a_named_baseline_is_kept_and_not_added_twice(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, GOOD + '[[variant]]\nname = "rgb"\nlevels = "none"\n'))
    assert (plan.baseline.name, plan.baseline.levels) == ("rgb", ())
    assert all(v.levels for v in plan.variants)


def test_a_weights_path_is_resolved_next_to_the_plan(tmp_path: Path) -> None:
    (tmp_path / "w.safetensors").write_bytes(b"x")
    plan = load_plan(write(tmp_path, GOOD.replace('weights = "random"', 'weights = "w.safetensors"')))
    assert plan.encoders[0].weights == str(tmp_path / "w.safetensors")


@pytest.mark.parametrize(
    ("old", "new", "names"),
    [
        ('adapter = "synthetic"', 'adapter = "nope"', ["dataset[0].adapter", "nope"]),
        ('name = "tiny-vit"', 'name = "no-such-encoder"', ["encoder[0].name", "no-such-encoder"]),
        ('decoder = "cisca"', 'decoder = "huge"', ["variant[0].decoder", "huge"]),
        ("levels = [2, 3]", "levels = [3, 2]", ["variant[0].levels"]),
        ('data_dir = "data/folder"', 'data_dir = "data/missing"', ["data_dir", "data/missing"]),
        ('data_dir = "data/folder"\n', "", ["dataset[1] (folder).data_dir", "missing"]),
        ("seeds = [0, 1]", "seeds = []", ["seeds", "empty"]),
        ("seeds = [0, 1]", "", ["seeds", "missing"]),
        ("seeds = [0, 1]", "seeds = [1, 1]", ["seeds", "distinct"]),
        ("epochs = 3", "epochs = 0", ["defaults.epochs", ">= 1"]),
        ("epochs = 3", "epoch = 3", ["defaults", "'epoch'"]),
        ('postprocess = "improved"', 'postprocess = "magic"', ["defaults.postprocess", "magic"]),
        ('weights = "random"', 'weights = "gone.pt"', ["encoder[0].weights", "gone.pt"]),
        ('name = "deep"', 'name = "lite-L0123"', ["variant", "lite-L0123", "twice"]),
        ('adapter = "folder"', 'adapter = "folder"\nname = "syn"', ["dataset", "syn", "twice"]),
        ('out = "results"', 'out = "results', ["not valid TOML"]),
    ],
)
def test_bad_plans_are_one_line_errors_naming_the_key(tmp_path: Path, old: str, new: str, names: list[str]) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(EmbedstoreError) as err:
        load_plan(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path))
    for name in names:
        assert name in message, message


def test_two_baselines_are_refused(tmp_path: Path) -> None:
    extra = '[[variant]]\nname = "a"\nlevels = "none"\n[[variant]]\nname = "b"\nlevels = "none"\n'
    with pytest.raises(EmbedstoreError, match="one baseline"):
        load_plan(write(tmp_path, GOOD + extra))


def test_a_missing_plan_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(EmbedstoreError, match="no such plan file"):
        load_plan(tmp_path / "absent.toml")


def test_the_example_real_plan_loads(real_data: Path) -> None:
    plan = load_plan(Path(__file__).resolve().parents[3] / "examples" / "study-real.toml")
    assert [d.name for d in plan.datasets] == ["monuseg", "consep"]
    assert all(d.data_dir is not None and d.data_dir.is_dir() for d in plan.datasets)
    assert plan.datasets[1].options == {"merge_types": False}
    assert dataset_signature(plan.datasets[1]) == {"merge_types": "False", "stride": "256"}  # as `-o merge_types=false`
    assert plan.settings.seeds == (0, 1, 2) and plan.baseline.levels == ()


def test_an_encoder_can_be_stored_compact_and_its_storage_names_its_store_and_row(tmp_path: Path) -> None:
    from embedstore.trainer.study.plan import encoder_store

    extra = ('[[encoder]]\nname = "tiny-vit"\nweights = "random"\nseed = 3\nquantize = "int8"\npca = 8\n'
             '[[encoder]]\nname = "tiny-vit"\nweights = "random"\nseed = 3\ncodec = "zstd:7"\n')
    plan = load_plan(write(tmp_path, GOOD.replace("[[variant]]", extra + "[[variant]]", 1)))
    (fp16, compact, zstd7) = plan.encoders
    assert (compact.quantize, compact.pca, compact.id, compact.label) == (
        "int8", 8, "tiny-vit-pca8-int8", "tiny-vit pca8-int8")
    assert encoder_store(plan.datasets[0], compact) == tmp_path / "results" / "stores" / "syn-pca8-int8.zarr"
    assert encoder_store(plan.datasets[0], fp16) == plan.datasets[0].store
    assert (zstd7.codec, zstd7.id) == ("zstd:7:bitshuffle", "tiny-vit-zstd-7-bitshuffle")  # as --codec spells it
    assert compact.codec == "zstd:5:bitshuffle"  # the int8 default: not part of the name
    assert EncoderPlan("tiny-vit", "random", quantize="int8", codec="zstd:3:bitshuffle").storage == "int8-zstd-3-bitshuffle"


@pytest.mark.parametrize(("key", "message"), [
    ('quantize = "int4"', "quantize = 'int4': expected one of none, int8"),
    ("pca = 0", "pca = 0: must be >= 1"),
    ('codec = "zstd:12"', "codec = 'zstd:12'"),
])
def test_bad_storage_keys_are_refused_by_name(tmp_path: Path, key: str, message: str) -> None:
    text = GOOD.replace('seed = 3\n', f'seed = 3\n{key}\n', 1)
    with pytest.raises(EmbedstoreError, match=re.escape(message)):
        load_plan(write(tmp_path, text))


def test_the_same_encoder_stored_the_same_way_twice_is_refused(tmp_path: Path) -> None:
    """``zstd:3:bitshuffle`` is the default codec spelt out: the same storage, so the same encoder twice."""
    extra = '[[encoder]]\nname = "tiny-vit"\nweights = "random"\ncodec = "zstd:3:bitshuffle"\n'
    with pytest.raises(EmbedstoreError, match="tiny-vit given twice"):
        load_plan(write(tmp_path, GOOD.replace("[[variant]]", extra + "[[variant]]", 1)))


def test_the_example_consep_plan_sets_vit_b_as_float16_int8_and_pca_256(real_data: Path) -> None:
    plan = load_plan(Path(__file__).resolve().parents[3] / "examples" / "study-consep.toml")
    assert [e.id for e in plan.encoders] == ["timm-vit_base_patch16_224", "timm-resnet50",
                                              "timm-vit_base_patch16_224-int8", "timm-vit_base_patch16_224-pca256"]
    assert plan.encoders[2].codec == "zstd:5:bitshuffle" and plan.settings.epochs == 2
