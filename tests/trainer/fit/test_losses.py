"""Specification of the CISCA loss terms (hand-checked values) and the validation metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from embedstore.errors import EmbedstoreError
from embedstore.trainer.model.decoder import DecoderConfig, build_decoder
from embedstore.trainer.fit.losses import (LossWeights, cisca_loss, contour_accuracy, direction_kernels,
                                       direction_mae_on_cells)


def _one_hot_logits(labels: torch.Tensor, n: int, scale: float = 50.0) -> torch.Tensor:
    """(B, n, H, W) logits whose softmax is (numerically) the one-hot of ``labels``."""
    return scale * torch.nn.functional.one_hot(labels, n).permute(0, 3, 1, 2).float()


def _scene(size: int = 64) -> dict[str, torch.Tensor]:
    """Two touching rectangles and one lone square, with CISCA targets written out by hand.

    Contour: boundary on the two columns where the rectangles touch, body elsewhere inside, background
    outside. Directions: per instance, h ramps -1..1 over its columns, v over its rows, tl along row+col
    and bl along col-row (min-max over the instance). Weight: 1 within 6 px of a cell, 0.05 elsewhere.
    """
    boxes = [(8, 28, 6, 26), (8, 28, 26, 46), (38, 56, 20, 38)]  # (row0, row1, col0, col1), end-exclusive
    instance = np.zeros((size, size), np.int64)
    directions = np.zeros((4, size, size), np.float32)
    rows, cols = np.mgrid[:size, :size]
    for i, (r0, r1, c0, c1) in enumerate(boxes, start=1):
        inside = (slice(r0, r1), slice(c0, c1))
        instance[inside] = i
        for m, coord in enumerate((cols, rows, rows + cols, cols - rows)):
            x = coord[inside].astype(np.float32)
            directions[m][inside] = 2 * (x - x.min()) / (x.max() - x.min()) - 1
    contour = np.where(instance > 0, 1, 2)
    contour[8:28, 25:27] = 0
    weight = np.where(ndimage.distance_transform_edt(instance == 0) <= 6, 1.0, 0.05)
    return {"contour": torch.from_numpy(contour)[None], "directions": torch.from_numpy(directions)[None],
            "weight": torch.from_numpy(weight).float()[None], "instance": torch.from_numpy(instance)[None],
            "types": torch.from_numpy(np.where(instance == 3, 2, (instance > 0).astype(np.int64)))[None]}


def _perfect_outputs(scene: dict[str, torch.Tensor], n_types: int = 2) -> dict[str, torch.Tensor]:
    return {"contour": _one_hot_logits(scene["contour"], 3), "directions": scene["directions"].clone(),
            "types": _one_hot_logits(scene["types"], n_types + 1)}


def test_default_weights_with_types_are_2_1_2_5_2_2_over_14():
    w = LossWeights().normalised(with_types=True)
    assert list(w) == ["cce", "dice_boundary", "dice_body", "type", "mae", "msge"]
    assert np.allclose(list(w.values()), np.array([2, 1, 2, 5, 2, 2]) / 14)


def test_default_weights_without_types_are_2_1_2_2_2_over_9():
    w = LossWeights().normalised(with_types=False)
    assert "type" not in w
    assert np.allclose(list(w.values()), np.array([2, 1, 2, 2, 2]) / 9)


def test_gradient_kernel_h_rows_are_those_of_the_notes():
    k = direction_kernels().numpy()[:, 0]
    assert np.allclose(k[0][:3], [[-.25, -.2, 0, .2, .25], [-.4, -.5, 0, .5, .4], [-.5, -1, 0, 1, .5]])
    assert np.allclose(k[0][3:], k[0][1::-1])  # rows below the centre mirror the rows above
    assert np.allclose(k[1], k[0].T)
    assert np.allclose(k[2], k[0] + k[1])
    assert np.allclose(k[3], np.rot90(k[2]))


def test_perfect_prediction_gives_zero_terms():
    scene = _scene()
    _, values = cisca_loss(_perfect_outputs(scene), scene["contour"], scene["directions"], scene["weight"],
                           scene["types"])
    assert values["cce"] < 1e-6 and values["type"] < 1e-6
    assert values["dice_boundary"] == pytest.approx(0, abs=1e-6)
    assert values["dice_body"] == pytest.approx(0, abs=1e-6)
    assert values["mae"] == 0 and values["msge"] == 0


def test_uniform_contour_logits_give_log3_cce_and_hand_computed_dice():
    scene = _scene()
    outputs = _perfect_outputs(scene)
    outputs["contour"] = torch.zeros(1, 3, 64, 64)
    _, values = cisca_loss(outputs, scene["contour"], scene["directions"], scene["weight"], scene["types"])
    n, n_boundary, n_body = 64 * 64, 2 * 20, int((scene["contour"] == 1).sum())
    assert values["cce"] == pytest.approx(math.log(3), rel=1e-6)
    assert values["dice_boundary"] == pytest.approx(1 - (2 * n_boundary / 3 + 1) / (n_boundary + n / 3 + 1), rel=1e-5)
    assert values["dice_body"] == pytest.approx(1 - (2 * n_body / 3 + 1) / (n_body + n / 3 + 1), rel=1e-5)


def test_type_term_is_cross_entropy_plus_elementwise_tversky():
    # One pixel of class 1 predicted with p = (0.25, 0.75). Tversky per channel: class 0 (y = 0) gives
    # 1 - e / (0.3 * 0.25 + e) ~ 1; class 1 gives 1 - 0.75 / (0.7 + 0.3 * 0.75) = 0.189189...
    logits = torch.tensor([0.0, math.log(3)]).reshape(1, 2, 1, 1)
    outputs = {"contour": torch.zeros(1, 3, 1, 1), "directions": torch.zeros(1, 4, 1, 1), "types": logits}
    ones = torch.ones(1, 1, 1)
    _, values = cisca_loss(outputs, ones.long(), torch.zeros(1, 4, 1, 1), ones, ones.long())
    tversky = ((1 - 1e-8 / (0.075 + 1e-8)) + (1 - 0.75 / 0.925)) / 2
    assert values["type"] == pytest.approx(-math.log(0.75) + tversky, rel=1e-6)


def test_masked_l1_normalises_by_the_mean_weight_and_penalises_far_predictions():
    weight = torch.ones(1, 8, 8)
    weight[:, :, 4:] = 0.05
    outputs = {"contour": torch.zeros(1, 3, 8, 8), "directions": torch.full((1, 4, 8, 8), 0.5)}
    _, values = cisca_loss(outputs, torch.full((1, 8, 8), 2), torch.zeros(1, 4, 8, 8), weight)
    # mean(W * 0.5) / mean(W) = 0.5; penalty 0.01 * mean((1 - W) * 0.5) = 0.01 * 0.5 * 0.95 / 2
    assert values["mae"] == pytest.approx(0.5 + 0.01 * 0.5 * 0.95 / 2, rel=1e-6)


def _kernel_energy(kind: str) -> float:
    """Sum of squared 5x5 kernel entries, from the formula K_h[dy, dx] = dx / (dx^2 + dy^2)."""
    total = 0.0
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            if dx or dy:
                k = {"h": dx, "v": dy, "diag": dx + dy}[kind] / (dx * dx + dy * dy)
                total += k * k
    return total


@pytest.mark.parametrize("msge_maps", ["all", "diagonals"])
def test_msge_of_a_single_wrong_pixel_is_the_kernel_energy(msge_maps):
    # An error of 1 at one interior pixel of every map: the correlation spreads it into the (flipped)
    # kernel, so with W = 1 the term is sum(K^2) over the covered maps / (maps * pixels).
    error = torch.zeros(1, 4, 9, 9)
    error[..., 4, 4] = 1
    outputs = {"contour": torch.zeros(1, 3, 9, 9), "directions": error}
    _, values = cisca_loss(outputs, torch.full((1, 9, 9), 2), torch.zeros(1, 4, 9, 9), torch.ones(1, 9, 9),
                           msge_maps=msge_maps)
    diag = _kernel_energy("diag")  # K_bl is a rotation of K_tl: same energy
    if msge_maps == "all":
        want = (_kernel_energy("h") + _kernel_energy("v") + 2 * diag) / (4 * 81)
    else:
        want = 2 * diag / (2 * 81)
    assert values["msge"] == pytest.approx(want, rel=1e-6)


def test_diagonal_msge_ignores_errors_in_h_and_v():
    error = torch.zeros(1, 4, 9, 9)
    error[:, :2, 4, 4] = 1
    outputs = {"contour": torch.zeros(1, 3, 9, 9), "directions": error}
    args = (torch.full((1, 9, 9), 2), torch.zeros(1, 4, 9, 9), torch.ones(1, 9, 9))
    assert cisca_loss(outputs, *args, msge_maps="diagonals")[1]["msge"] == 0
    assert cisca_loss(outputs, *args, msge_maps="all")[1]["msge"] > 0


def test_total_is_the_normalised_weighted_sum_of_the_terms():
    scene = _scene()
    g = torch.Generator().manual_seed(0)
    outputs = {k: torch.randn(v.shape, generator=g) for k, v in _perfect_outputs(scene).items()}
    weights = LossWeights(cce=1, dice_boundary=0, dice_body=3, type=2, mae=1, msge=1)
    total, values = cisca_loss(outputs, scene["contour"], scene["directions"], scene["weight"], scene["types"],
                               weights)
    w = weights.normalised(with_types=True)
    assert total.item() == pytest.approx(sum(w[k] * values[k] for k in w), rel=1e-6)
    assert values["total"] == pytest.approx(total.item())


def test_half_precision_extreme_logits_give_a_finite_float32_loss_and_gradients():
    scene = _scene()
    outputs = {k: (v * 1e3).half().requires_grad_() for k, v in _perfect_outputs(scene).items()}
    flipped = {"contour": -outputs["contour"], "directions": outputs["directions"], "types": -outputs["types"]}
    total, _ = cisca_loss(flipped, scene["contour"], scene["directions"], scene["weight"], scene["types"])
    total.backward()
    assert total.dtype == torch.float32 and torch.isfinite(total)
    assert all(torch.isfinite(v.grad).all() for v in outputs.values())


def test_type_targets_without_a_type_head_are_refused():
    scene = _scene()
    outputs = _perfect_outputs(scene)
    del outputs["types"]
    with pytest.raises(EmbedstoreError, match="n_types"):
        cisca_loss(outputs, scene["contour"], scene["directions"], scene["weight"], scene["types"])


def test_unknown_msge_maps_option_is_refused():
    scene = _scene()
    with pytest.raises(EmbedstoreError, match="msge_maps"):
        cisca_loss(_perfect_outputs(scene), scene["contour"], scene["directions"], scene["weight"],
                   scene["types"], msge_maps="hv")


def test_direction_mae_counts_only_cell_pixels():
    true = torch.zeros(1, 4, 4, 4)
    pred = torch.full((1, 4, 4, 4), 9.0)  # wrong by 9 on background
    mask = torch.zeros(1, 4, 4, dtype=torch.int32)
    mask[0, :2] = 5
    pred[:, :, :2] = true[:, :, :2] + torch.tensor([0.1, 0.2, 0.3, 0.4]).reshape(1, 4, 1, 1)
    assert direction_mae_on_cells(pred, true, mask) == pytest.approx(0.25)


def test_direction_mae_without_cells_is_nan():
    assert math.isnan(direction_mae_on_cells(torch.ones(1, 4, 2, 2), torch.zeros(1, 4, 2, 2),
                                             torch.zeros(1, 2, 2)))


def test_contour_accuracy_is_the_fraction_of_right_argmax_pixels():
    contour = torch.tensor([[[0, 1], [2, 2]]])
    logits = _one_hot_logits(torch.tensor([[[0, 1], [1, 0]]]), 3)
    assert contour_accuracy(logits, contour) == 0.5


def test_decoder_and_loss_fit_one_synthetic_tile_within_50_steps():
    torch.manual_seed(0)
    scene = _scene()
    cfg = DecoderConfig("lite", (32, 32, 32, 32), (4, 4, 4, 4), n_types=2, tile_size=64)
    model = build_decoder(cfg)
    g = torch.Generator().manual_seed(0)
    levels = [torch.randn(1, 32, 4, 4, generator=g) for _ in range(4)]
    image = torch.rand(1, 3, 64, 64, generator=g)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(50):
        total, _ = cisca_loss(model(levels, image), scene["contour"], scene["directions"], scene["weight"],
                              scene["types"])
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        losses.append(total.item())
    assert losses[-1] < 0.4 * losses[0]


def test_the_msge_maps_option_names_exactly_the_channel_sets_of_the_loss() -> None:
    from typing import get_args

    from embedstore.trainer.fit.losses import MSGE_MAPS
    from embedstore.trainer.fit.options import LossOptions, MsgeMaps

    assert get_args(MsgeMaps) == tuple(MSGE_MAPS)
    with pytest.raises(EmbedstoreError, match="--msge-maps none"):
        LossOptions(msge_maps="none")
