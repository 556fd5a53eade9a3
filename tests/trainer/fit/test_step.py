"""The one training step: equal to a hand-written forward/backward/Adam step, with optional per-tensor clip."""

from __future__ import annotations

import numpy as np
import torch

from embedstore.trainer.data.batch import Batch
from embedstore.trainer.fit.losses import cisca_loss
from embedstore.trainer.fit.options import LossOptions, LossWeights, Optimisation
from embedstore.trainer.fit.seed_state import build_optimizer
from embedstore.trainer.fit.step import train_step
from embedstore.trainer.model.decoder import DecoderConfig, build_decoder

S = 32


def _batch(seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    levels = [torch.randn(2, 8, 2, 2, generator=g) for _ in range(4)]
    return Batch(levels=levels, image=torch.rand(2, 3, S, S, generator=g),
                 contour=torch.randint(0, 3, (2, S, S), generator=g),
                 directions=torch.rand(2, 4, S, S, generator=g) * 2 - 1, weight=torch.rand(2, S, S, generator=g),
                 types=torch.randint(0, 3, (2, S, S), generator=g), tiles=np.arange(2), views=np.zeros(2, dtype=np.int64))


def _decoder() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = DecoderConfig(preset="lite", level_dims=(8,) * 4, level_grids=(2,) * 4, n_types=2, tile_size=S)
    return build_decoder(cfg).train()


def test_train_step_equals_forward_loss_backward_and_an_adam_step() -> None:
    batch, loss = _batch(), LossOptions(LossWeights(mae=3.0), "diagonals")
    stepped, manual = _decoder(), _decoder()
    terms = train_step(stepped, build_optimizer(stepped, Optimisation()), batch, loss)
    optimizer = torch.optim.Adam(manual.parameters(), lr=5e-4, eps=1e-7, amsgrad=True)
    total, expected = cisca_loss(manual(batch.levels, batch.image), batch.contour, batch.directions, batch.weight,
                                 batch.types, LossWeights(mae=3.0), msge_maps="diagonals")
    total.backward()
    optimizer.step()
    assert terms == expected
    for a, b in zip(stepped.state_dict().values(), manual.state_dict().values()):
        assert torch.equal(a, b)


def test_clip_norm_bounds_every_gradient_tensor_on_its_own() -> None:
    model = _decoder()
    train_step(model, build_optimizer(model, Optimisation()), _batch(), LossOptions(), clip_norm=1e-3)
    norms = [float(p.grad.norm()) for p in model.parameters() if p.grad is not None]
    assert norms and max(norms) <= 1e-3 * (1 + 1e-5)
    assert sum(n * n for n in norms) ** 0.5 > 2e-3  # clipped tensor by tensor, not as one global norm


def test_explicit_levels_replace_the_batch_levels() -> None:
    batch = _batch()
    other = [x + 1.0 for x in batch.levels]
    a, b = _decoder(), _decoder()
    loss = LossOptions()
    terms_given = train_step(a, build_optimizer(a, Optimisation()), batch, loss, levels=other)
    terms_swapped = train_step(b, build_optimizer(b, Optimisation()), Batch(**{**batch.__dict__, "levels": other}), loss)
    assert terms_given == terms_swapped
    assert terms_given != train_step(_decoder(), build_optimizer(_decoder(), Optimisation()), batch, loss)
