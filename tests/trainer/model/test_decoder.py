"""Specification of the cached-token decoder: scale plan, shapes per encoder family, gradients, seeds."""

from __future__ import annotations

import json

import pytest
import torch

from embedstore.errors import EmbedstoreError
from embedstore.trainer.model.decoder import DecoderConfig, build_decoder, count_parameters, level_scales


# (level_dims, level_grids) for a 256 tile, one entry per encoder family the registry holds.
FAMILIES = {
    "vit16": ((768, 768, 768, 768), (16, 16, 16, 16)),  # ViT-B/16 at 256
    "vit14": ((1280, 1280, 1280, 1280), (18, 18, 18, 18)),  # ViT-H/14 at 252 (Virchow2)
    "cnn": ((128, 256, 512, 1024), (64, 32, 16, 8)),  # ConvNeXt-B stages
    "swin": ((96, 192, 384, 768), (56, 28, 14, 7)),  # Swin-T stages at 224
}


def _inputs(cfg: DecoderConfig, batch: int = 1, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    levels = [torch.randn(batch, cfg.level_dims[k], cfg.level_grids[k], cfg.level_grids[k], generator=g)
              for k in cfg.levels]
    return levels, torch.rand(batch, 3, cfg.tile_size, cfg.tile_size, generator=g)


def _small(preset: str = "lite", n_types: int = 3, **kw) -> DecoderConfig:
    """A 64 px tile with ViT-like levels (4x4 grids, stride 16): cheap enough for backward passes."""
    return DecoderConfig(preset, (32, 32, 32, 32), (4, 4, 4, 4), n_types, tile_size=64, **kw)


def test_vit_levels_are_planned_at_strides_2_4_8_16():
    cfg = DecoderConfig("lite", *FAMILIES["vit16"], 0)
    assert level_scales(cfg) == [(16, 2), (16, 4), (16, 8), (16, 16)]


def test_cnn_stages_stay_at_their_native_strides():
    cfg = DecoderConfig("lite", *FAMILIES["cnn"], 0)
    assert level_scales(cfg) == [(4, 4), (8, 8), (16, 16), (32, 32)]


def test_vit14_grid_of_18_rounds_to_stride_16():
    cfg = DecoderConfig("lite", *FAMILIES["vit14"], 0)
    assert [native for native, _ in level_scales(cfg)] == [16, 16, 16, 16]


def test_a_level_subset_starts_from_its_deepest_level():
    cfg = DecoderConfig("lite", *FAMILIES["vit16"], 0, levels=(0, 2))
    assert level_scales(cfg) == [(16, 8), (16, 16)]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_lite_outputs_have_tile_resolution_for_every_encoder_family(family):
    cfg = DecoderConfig("lite", *FAMILIES[family], n_types=5)
    model = build_decoder(cfg).eval()
    with torch.no_grad():
        out = model(*_inputs(cfg))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "contour": (1, 3, 256, 256), "directions": (1, 4, 256, 256), "types": (1, 6, 256, 256)}


@pytest.mark.parametrize("grids", [(4, 4, 4, 4), (16, 8, 4, 2)])
def test_cisca_preset_outputs_have_tile_resolution(grids):
    cfg = DecoderConfig("cisca", (32, 48, 64, 96), grids, n_types=2, tile_size=64)
    with torch.no_grad():
        out = build_decoder(cfg).eval()(*_inputs(cfg, batch=2))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "contour": (2, 3, 64, 64), "directions": (2, 4, 64, 64), "types": (2, 3, 64, 64)}


def test_no_type_head_when_n_types_is_zero():
    cfg = _small(n_types=0)
    model = build_decoder(cfg)
    with torch.no_grad():
        out = model(*_inputs(cfg))
    assert set(out) == {"contour", "directions"}
    assert count_parameters(model) < count_parameters(build_decoder(_small(n_types=5)))


def test_a_level_subset_reads_only_those_levels():
    cfg = _small(levels=(1, 3))
    levels, image = _inputs(cfg)
    assert len(levels) == 2
    with torch.no_grad():
        assert build_decoder(cfg)(levels, image)["contour"].shape == (1, 3, 64, 64)


def test_passing_all_levels_to_a_subset_decoder_is_refused():
    cfg = _small(levels=(1, 3))
    levels, image = _inputs(_small())
    with pytest.raises(EmbedstoreError, match="levels"):
        build_decoder(cfg)(levels, image)


def test_level_with_wrong_channel_count_is_refused():
    cfg = _small()
    levels, image = _inputs(cfg)
    levels[2] = levels[2][:, :16]
    with pytest.raises(EmbedstoreError, match="level 2"):
        build_decoder(cfg)(levels, image)


@pytest.mark.parametrize("preset", ["lite", "cisca"])
def test_gradient_reaches_every_parameter(preset):
    torch.manual_seed(0)
    cfg = _small(preset)
    model = build_decoder(cfg)
    out = model(*_inputs(cfg, batch=2))
    g = torch.Generator().manual_seed(1)
    sum((v * torch.randn(v.shape, generator=g)).sum() for v in out.values()).backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_same_seed_gives_identical_weights_and_outputs():
    cfg = _small()
    inputs = _inputs(cfg)
    outs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        with torch.no_grad():
            outs.append(build_decoder(cfg)(*inputs)["directions"])
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_levels_decode_like_their_float32_values(dtype):
    torch.manual_seed(0)
    cfg = _small()
    model = build_decoder(cfg)
    levels, image = _inputs(cfg)
    half = [x.to(dtype) for x in levels]
    with torch.no_grad():
        got = model(half, image)
        want = model([x.float() for x in half], image)
    assert got["contour"].dtype == torch.float32
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_config_round_trips_through_json():
    cfg = DecoderConfig("cisca", *FAMILIES["cnn"], n_types=5, levels=(1, 2, 3))
    assert DecoderConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_unknown_preset_is_refused():
    with pytest.raises(EmbedstoreError, match="preset"):
        DecoderConfig("huge", *FAMILIES["vit16"], 0)


def test_grid_coarser_than_stride_32_is_refused():
    with pytest.raises(EmbedstoreError, match="level 3"):
        DecoderConfig("lite", (8, 8, 8, 8), (16, 16, 16, 4), 0)


def test_unsorted_levels_are_refused():
    with pytest.raises(EmbedstoreError, match="levels"):
        DecoderConfig("lite", *FAMILIES["vit16"], 0, levels=(2, 1))



def test_the_no_encoder_baseline_decodes_the_rgb_tile_alone():
    cfg = _small(levels=())
    model = build_decoder(cfg)
    assert len(model.branches) == 0 and model.path_strides == [2, 1]
    _, image = _inputs(cfg, batch=2)
    out = model([], image)
    assert out["contour"].shape == (2, 3, 64, 64) and out["types"].shape == (2, 4, 64, 64)
    out["directions"].abs().mean().backward()
    assert all(p.grad is not None for p in model.stem.parameters())
    assert count_parameters(model) < count_parameters(build_decoder(_small()))
    assert DecoderConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_the_no_encoder_baseline_refuses_level_tensors():
    levels, image = _inputs(_small(levels=(3,)))
    with pytest.raises(EmbedstoreError, match="levels"):
        build_decoder(_small(levels=()))(levels, image)

def test_count_parameters_counts_only_trainable_ones():
    model = build_decoder(_small())
    total = sum(p.numel() for p in model.parameters())
    model.contour.requires_grad_(False)
    frozen = sum(p.numel() for p in model.contour.parameters())
    assert count_parameters(model) == total - frozen


def test_the_decoder_option_names_exactly_the_width_presets() -> None:
    from typing import get_args

    from embedstore.trainer.model.presets import PRESETS, DecoderPreset

    assert get_args(DecoderPreset) == tuple(PRESETS)
