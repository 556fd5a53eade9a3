"""Encoder registry: specs, four-level outputs of every encoder, weights and fingerprints, preprocessing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import timm
import torch
import torch.nn.functional as F
from huggingface_hub.errors import GatedRepoError
from PIL import Image

from embedstore.encoders import EncoderSpec, FrozenEncoder, build_encoder, get_spec, list_specs
from embedstore.encoders.levels import take_levels
from embedstore.encoders.registry import measure_levels, vit_levels
from embedstore.encoders.spec import create_network
from embedstore.errors import EmbedstoreError

HEAVY = {"uni2-h", "virchow2", "gigapath", "dinov2-l", "dinov2-l-reg4", "vit-b-22k"}  # uni covers ViTs by default


@pytest.fixture()
def tiles(real_data: Path) -> torch.Tensor:
    """Two real 256 x 256 H&E tiles (NuCLS, CC0) as a (2, 256, 256, 3) uint8 batch (skipped without the samples)."""
    root = real_data / "nucls" / "test" / "images"
    images = [np.asarray(Image.open(root / f"test_{i}.png").convert("RGB")) for i in (1, 2)]
    return torch.from_numpy(np.stack(images))


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to open a network connection fail loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def save_random_weights(spec: EncoderSpec, seed: int, path: Path) -> dict[str, torch.Tensor]:
    """The full network's state dict as ``build_encoder(spec, 'random', seed=seed)`` initialises it."""
    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in create_network(spec).state_dict().items()}
    safetensors.torch.save_file(state, path)
    return state


def assert_same_outputs(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


# --- registry -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "spec", [pytest.param(s, id=s.key, marks=[pytest.mark.slow] if s.key in HEAVY else []) for s in list_specs()]
)
def test_registered_encoder_at_full_architecture_gives_documented_levels(spec: EncoderSpec, tiles) -> None:
    encoder = build_encoder(spec, "random", seed=0)
    levels = encoder(tiles[:1])
    assert [tuple(t.shape) for t in levels] == [(1, c, g, g) for c, g in zip(spec.dims, spec.grids)]
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in levels)


@pytest.fixture(scope="module")
def meta_networks() -> dict[str, torch.nn.Module]:
    """Every registered network built on the meta device (shapes only, no memory, no compute)."""
    with torch.device("meta"):
        return {spec.key: create_network(spec) for spec in list_specs()}


def test_increasing_levels_are_required() -> None:
    with pytest.raises(ValueError, match="increasing"):
        dataclasses.replace(get_spec("tiny-vit"), levels=(0, 0, 1, 1))


def test_heavy_specs_match_a_meta_forward_of_their_full_network(meta_networks) -> None:
    for key in sorted(HEAVY):
        spec = get_spec(key)
        side = spec.input_side(256)
        out = take_levels(meta_networks[key], spec, torch.empty(1, 3, side, side, device="meta"))
        assert [tuple(t.shape[1:]) for t in out] == [(c, g, g) for c, g in zip(spec.dims, spec.grids)], key


def test_measure_levels_reads_shapes_from_the_meta_device() -> None:
    assert measure_levels(get_spec("tiny-cnn"), 320) == [(16, 80, 80), (32, 40, 40), (64, 20, 20), (128, 10, 10)]


def test_registered_names_include_the_paper_encoders() -> None:
    keys = [s.key for s in list_specs()]
    assert keys == list(dict.fromkeys(keys))
    assert {"uni", "uni2-h", "virchow2", "gigapath", "dinov2-l", "dinov2-l-reg4", "convnext-b-22k",
            "swinv2-b-22k", "vit-b-22k", "vit-r50-hybrid", "tiny-vit", "tiny-cnn"} <= set(keys)


def test_vit_levels_are_four_evenly_spaced_blocks_ending_at_the_last() -> None:
    assert vit_levels(12) == (2, 5, 8, 11)
    assert vit_levels(24) == (5, 11, 17, 23)
    assert vit_levels(32) == (7, 15, 23, 31)
    assert vit_levels(40) == (9, 19, 29, 39)


def test_vit_specs_drop_exactly_the_networks_prefix_tokens(meta_networks) -> None:
    expected = {"uni": 1, "uni2-h": 9, "virchow2": 5, "gigapath": 1, "dinov2-l-reg4": 5, "vit-r50-hybrid": 1}
    for spec in list_specs():
        if spec.family in ("vit", "hybrid"):
            network = meta_networks[spec.key]
            assert spec.prefix_tokens == network.num_prefix_tokens, spec.key
            assert len(network.blocks) - 1 == spec.levels[-1], spec.key
            assert spec.prefix_tokens == expected.get(spec.key, spec.prefix_tokens)


def test_timm_sourced_specs_use_timm_normalisation_and_licence() -> None:
    for spec in list_specs():
        if not spec.source.startswith("hf-hub:") and spec.source != "random":
            cfg = timm.models.get_pretrained_cfg(spec.source)
            assert (spec.mean, spec.std) == (tuple(cfg.mean), tuple(cfg.std)), spec.key
            assert spec.licence == cfg.license, spec.key
            assert cfg.architecture == spec.architecture, spec.key


def test_pathology_encoders_are_gated_and_use_imagenet_normalisation() -> None:
    for key in ("uni", "uni2-h", "virchow2", "gigapath"):
        spec = get_spec(key)
        assert spec.gated and spec.source.startswith("hf-hub:")
        assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)


def test_patch14_encoders_resize_256_tiles_to_252() -> None:
    for key in ("uni2-h", "virchow2", "dinov2-l"):
        spec = get_spec(key)
        assert (spec.resize, spec.input_size, spec.grids) == ("resize", 252, (18, 18, 18, 18))
    assert (get_spec("gigapath").resize, get_spec("gigapath").grids) == ("none", (16, 16, 16, 16))


def test_swiglu_encoders_resolve_callable_names() -> None:
    for key in ("virchow2", "uni2-h"):
        kwargs = get_spec(key).timm_kwargs()
        assert kwargs["mlp_layer"] is timm.layers.SwiGLUPacked and kwargs["act_layer"] is torch.nn.SiLU


def test_spec_dict_is_json_and_round_trips() -> None:
    for key in ("virchow2", "swinv2-b-22k", "tiny-cnn"):
        spec = get_spec(key)
        data = json.loads(json.dumps(spec.to_dict()))
        assert data["levels"] == list(spec.levels)
        assert EncoderSpec.from_dict(data) == spec


def test_unknown_encoder_error_lists_valid_names() -> None:
    with pytest.raises(EmbedstoreError, match="unknown encoder 'unii'.*uni, uni2-h.*timm:"):
        get_spec("unii")


def test_unknown_timm_model_raises() -> None:
    with pytest.raises(EmbedstoreError, match="timm:not_a_model"):
        get_spec("timm:not_a_model")


@pytest.mark.parametrize(("name", "family", "dims", "grids", "levels"), [
    ("timm:resnet18", "cnn", (64, 128, 256, 512), (64, 32, 16, 8), (1, 2, 3, 4)),
    ("timm:vit_small_patch16_224", "vit", (384,) * 4, (16,) * 4, (2, 5, 8, 11)),
])
def test_timm_name_builds_a_spec_on_the_fly(name, family, dims, grids, levels, tiles) -> None:
    spec = get_spec(name)
    assert (spec.family, spec.dims, spec.grids, spec.levels) == (family, dims, grids, levels)
    out = build_encoder(spec, "random")(tiles[:1])
    assert [tuple(t.shape) for t in out] == [(1, c, g, g) for c, g in zip(dims, grids)]


def test_timm_vit_spec_takes_its_normalisation_from_timm() -> None:
    spec = get_spec("timm:vit_small_patch16_224.augreg_in21k")
    assert (spec.mean, spec.std, spec.prefix_tokens, spec.source) == (
        (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 1, "vit_small_patch16_224.augreg_in21k")


# --- fingerprints and weights ---------------------------------------------------------------------------

def test_same_seed_gives_same_fingerprint_and_identical_outputs(tiles) -> None:
    a, b = build_encoder("tiny-vit", "random", seed=7), build_encoder("tiny-vit", "random", seed=7)
    assert a.fingerprint == b.fingerprint == a.weights_source == "random:7"
    assert_same_outputs(a(tiles), b(tiles))


def test_different_seed_gives_different_fingerprint_and_outputs(tiles) -> None:
    a, b = build_encoder("tiny-vit", "random", seed=1), build_encoder("tiny-vit", "random", seed=2)
    assert a.fingerprint != b.fingerprint
    assert not torch.equal(a(tiles)[0], b(tiles)[0])


def test_random_build_leaves_the_callers_rng_untouched() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_encoder("tiny-cnn", "random", seed=5)
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


def test_safetensors_file_round_trip_gives_identical_outputs_and_file_hash(tmp_path, tiles) -> None:
    path = tmp_path / "tiny.safetensors"
    save_random_weights(get_spec("tiny-vit"), 3, path)
    loaded = build_encoder("tiny-vit", path, seed=99)
    assert loaded.fingerprint == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.weights_source == f"file:{path.resolve()}"
    assert_same_outputs(loaded(tiles), build_encoder("tiny-vit", "random", seed=3)(tiles))


def test_torch_file_with_wrapper_and_module_prefix_loads(tmp_path, tiles) -> None:
    state = save_random_weights(get_spec("tiny-cnn"), 4, tmp_path / "unused.safetensors")
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = build_encoder("tiny-cnn", str(path))
    assert loaded.fingerprint.startswith("sha256:")
    assert_same_outputs(loaded(tiles), build_encoder("tiny-cnn", "random", seed=4)(tiles))


class _Pickled:
    """Stands for arbitrary code a pickle could run; weights_only loading must refuse it."""


def test_torch_file_is_read_with_weights_only(tmp_path) -> None:
    path = tmp_path / "unsafe.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "extra": _Pickled()}, path)
    with pytest.raises(EmbedstoreError, match="cannot read weights file .*unsafe.pt"):
        build_encoder("tiny-cnn", path)


def test_file_without_parts_the_encoder_never_runs_still_loads(tmp_path, tiles) -> None:
    encoder = build_encoder("tiny-vit", "random", seed=6)  # pruned: final norm removed
    assert not any(k.startswith("norm.") for k in encoder.model.state_dict())
    path = tmp_path / "backbone.safetensors"
    safetensors.torch.save_file(encoder.model.state_dict(), path)
    assert_same_outputs(build_encoder("tiny-vit", path)(tiles), encoder(tiles))


def test_mismatched_weights_file_raises_naming_the_file(tmp_path) -> None:
    path = tmp_path / "vit.safetensors"
    save_random_weights(get_spec("tiny-vit"), 0, path)
    with pytest.raises(EmbedstoreError, match=r"vit\.safetensors does not fit encoder 'tiny-cnn'.*missing.*unexpected"):
        build_encoder("tiny-cnn", path)


def test_weights_with_wrong_shapes_raise(tmp_path) -> None:
    path = tmp_path / "narrow.safetensors"
    state = save_random_weights(get_spec("tiny-vit"), 0, path)
    state["cls_token"] = torch.zeros(1, 1, 32)
    safetensors.torch.save_file(state, path)
    shape_error = r"another shape \(e\.g\. cls_token: file \(1, 1, 32\), model \(1, 1, 64\)"
    with pytest.raises(EmbedstoreError, match=shape_error):
        build_encoder("tiny-vit", path)


def test_torch_file_with_model_wrapper_and_model_prefix_loads(tmp_path, tiles) -> None:
    state = save_random_weights(get_spec("tiny-cnn"), 5, tmp_path / "unused.safetensors")
    path = tmp_path / "lightning.ckpt"
    torch.save({"model": {f"model.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    assert_same_outputs(build_encoder("tiny-cnn", str(path))(tiles), build_encoder("tiny-cnn", "random", seed=5)(tiles))


def test_torch_file_without_a_state_dict_is_refused_naming_the_file(tmp_path) -> None:
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(EmbedstoreError, match="tensor.pt does not hold a state dict"):
        build_encoder("tiny-cnn", path)


def test_missing_weights_file_raises(tmp_path) -> None:
    with pytest.raises(EmbedstoreError, match="does not exist"):
        build_encoder("tiny-vit", tmp_path / "absent.safetensors")


# --- Hugging Face Hub (never touches the network) -------------------------------------------------------

@pytest.fixture()
def empty_offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_network) -> Path:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return tmp_path / "hf" / "hub"


def test_hub_offline_with_empty_cache_raises_with_access_hint(empty_offline_hub) -> None:
    with pytest.raises(EmbedstoreError) as info:
        build_encoder("uni", "hub")
    message = str(info.value)
    assert "\n" not in message
    for part in ("HF_HUB_OFFLINE", "MahmoodLab/UNI", str(empty_offline_hub), "huggingface-cli login", "HF_TOKEN",
                 "--weights PATH", "--weights random"):
        assert part in message


def test_hub_gated_repo_without_access_raises_with_licence_hint(monkeypatch, empty_offline_hub) -> None:
    def gated(repo_id, filename, **kwargs):
        # built without __init__, whose signature differs between huggingface_hub versions
        raise GatedRepoError.__new__(GatedRepoError, f"401 Client Error: access to {repo_id} is restricted")
    monkeypatch.setattr("embedstore.encoders.weights.hf_hub_download", gated)
    with pytest.raises(EmbedstoreError, match=r"no access to paige-ai/Virchow2 .*accept its licence on "
                                              r"https://huggingface\.co/paige-ai/Virchow2 .*HF_TOKEN"):
        build_encoder("virchow2", "hub")


def test_hub_weights_are_read_from_the_cache_with_their_revision(empty_offline_hub, tiles) -> None:
    spec = get_spec("timm:resnet10t.c3_in1k")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = empty_offline_hub / "models--timm--resnet10t.c3_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    weights = repo / "snapshots" / commit / "model.safetensors"
    save_random_weights(spec, 8, weights)
    encoder = build_encoder(spec, "hub")
    assert encoder.weights_source == f"hf-hub:timm/resnet10t.c3_in1k@{commit}"
    assert encoder.fingerprint == "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    assert_same_outputs(encoder(tiles), build_encoder(spec, "random", seed=8)(tiles))


def test_hub_download_uses_the_token_and_cache_set_now(monkeypatch, empty_offline_hub, tmp_path) -> None:
    seen = {}

    def record(repo_id, filename, **kwargs):
        seen.update(kwargs)
        raise GatedRepoError.__new__(GatedRepoError, "401")
    monkeypatch.setattr("embedstore.encoders.weights.hf_hub_download", record)
    monkeypatch.setenv("HF_TOKEN", "hf_example_token")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    with pytest.raises(EmbedstoreError, match="no access"):
        build_encoder("uni", "hub")
    assert seen["token"] == "hf_example_token"
    assert Path(seen["cache_dir"]) == tmp_path / "elsewhere"
    assert seen["local_files_only"] is True


def test_hub_for_an_encoder_without_published_weights_raises(empty_offline_hub) -> None:
    with pytest.raises(EmbedstoreError, match="'tiny-vit' has no published weights.*--weights random"):
        build_encoder("tiny-vit", "hub")


# --- preprocessing and forward --------------------------------------------------------------------------

def test_preprocessing_scales_to_unit_range_and_normalises(tiles) -> None:
    encoder = build_encoder("tiny-vit", "random")
    spec = encoder.spec
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    expected = (tiles.permute(0, 3, 1, 2).double() / 255 - mean) / std
    torch.testing.assert_close(encoder.preprocess(tiles).double(), expected, rtol=0, atol=1e-5)


def test_forward_equals_the_network_on_manually_preprocessed_tiles(tiles) -> None:
    encoder = build_encoder("tiny-vit", "random", seed=2)
    spec = encoder.spec
    x = (tiles.permute(0, 3, 1, 2).float() / 255 - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(
        spec.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        expected = encoder.model.forward_intermediates(x, indices=[0, 1, 2, 3], intermediates_only=True)
    for got, want in zip(encoder(tiles), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def patch14_tiny_vit() -> EncoderSpec:
    base = get_spec("tiny-vit")
    return dataclasses.replace(
        base, key="tiny-vit-14", patch_size=14, input_size=252, resize="resize", grids=(18,) * 4,
        model_kwargs=(*base.model_kwargs, ("patch_size", 14)),
    )


def test_resize_policy_feeds_a_bicubic_252_input_to_patch14_vits(tiles) -> None:
    encoder = build_encoder(patch14_tiny_vit(), "random")
    spec = encoder.spec
    scaled = F.interpolate(tiles.permute(0, 3, 1, 2).float() / 255, size=(252, 252), mode="bicubic",
                           antialias=True, align_corners=False).clamp(0, 1)
    expected = (scaled - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    torch.testing.assert_close(encoder.preprocess(tiles), expected, rtol=0, atol=1e-5)
    assert [tuple(t.shape) for t in encoder(tiles)] == [(2, 64, 18, 18)] * 4


def test_resize_moves_values_less_than_one_grey_level_on_a_flat_tile() -> None:
    encoder = build_encoder(patch14_tiny_vit(), "random")
    flat = torch.full((1, 256, 256, 3), 200, dtype=torch.uint8)
    expected = (200 / 255 - torch.tensor(encoder.spec.mean)) / torch.tensor(encoder.spec.std)
    torch.testing.assert_close(encoder.preprocess(flat)[0, :, 100, 100], expected, rtol=0, atol=1e-5)


def test_images_must_be_nhwc_uint8() -> None:
    encoder = build_encoder("tiny-cnn", "random")
    with pytest.raises(EmbedstoreError, match=r"\(B, H, W, 3\) uint8"):
        encoder(torch.zeros(1, 3, 256, 256, dtype=torch.uint8))
    with pytest.raises(EmbedstoreError, match=r"\(B, H, W, 3\) uint8"):
        encoder(torch.zeros(1, 256, 256, 3))


def test_unresized_vit_refuses_tiles_that_are_not_multiples_of_the_patch() -> None:
    encoder = build_encoder("tiny-vit", "random")
    with pytest.raises(EmbedstoreError, match="multiples of 16, got 250x250"):
        encoder(torch.zeros(1, 250, 250, 3, dtype=torch.uint8))


def test_encoder_is_frozen_and_stays_in_eval_mode(tiles) -> None:
    encoder = build_encoder("tiny-cnn", "random")
    assert isinstance(encoder, FrozenEncoder)
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training and not encoder.model.training
    out = encoder(tiles)
    assert all(t.is_inference() and not t.requires_grad for t in out)


def test_blocks_after_the_deepest_level_are_dropped_without_changing_levels(tiles) -> None:
    base = get_spec("tiny-vit")
    spec = dataclasses.replace(base, model_kwargs=(*base.model_kwargs, ("depth", 6)))  # levels stay 0..3
    encoder = build_encoder(spec, "random", seed=1)
    assert len(encoder.model.blocks) == 4
    torch.manual_seed(1)
    full = create_network(spec).eval()
    assert len(full.blocks) == 6
    with torch.inference_mode():
        expected = full.forward_intermediates(encoder.preprocess(tiles), indices=[0, 1, 2, 3], intermediates_only=True)
    assert_same_outputs(encoder(tiles), expected)


def test_hybrid_levels_are_two_resnet_stages_then_two_vit_blocks(meta_networks) -> None:
    spec = get_spec("vit-r50-hybrid")
    network = meta_networks[spec.key]
    out = take_levels(network, spec, torch.empty(1, 3, 256, 256, device="meta"))
    stages = network.patch_embed.backbone.stages
    assert [t.shape[1] for t in out[:2]] == [stages[0].blocks[-1].conv3.out_channels,
                                             stages[1].blocks[-1].conv3.out_channels]
    assert [tuple(t.shape[1:]) for t in out] == [(256, 64, 64), (512, 32, 32), (768, 16, 16), (768, 16, 16)]


def test_level_shapes_follow_the_tile_size() -> None:
    encoder = build_encoder("tiny-cnn", "random")
    assert encoder.level_shapes() == [(16, 64, 64), (32, 32, 32), (64, 16, 16), (128, 8, 8)]
    assert encoder.level_shapes(320) == [(16, 80, 80), (32, 40, 40), (64, 20, 20), (128, 10, 10)]
    assert build_encoder(patch14_tiny_vit(), "random").level_shapes(512) == [(64, 36, 36)] * 4
