"""The model `embed predict` runs: a run's frozen encoder and one seed's best decoder, tiles in, maps out."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedstore.encoders import EncoderSpec, FrozenEncoder, build_encoder, get_spec
from embedstore.errors import EmbedstoreError
from embedstore.extract.compact import DeviceTransform, decoder_inputs
from embedstore.store import open_store
from embedstore.store.features import load_transform
from embedstore.trainer.inference.maps import LoadedRun, load_run, map_channels, predict_maps
from embedstore.trainer.model.checkpoint import read_metadata
from embedstore.trainer.run_folder import RunDir

#: Name of the single class of runs trained without cell types.
UNTYPED_CLASS = "Cell"


@dataclass(frozen=True)
class RunModel:
    """A run's frozen encoder and one seed's decoder: uint8 tiles in, stitched-ready maps out."""

    encoder: FrozenEncoder
    decoder: LoadedRun
    fingerprint_matches: bool
    transform: DeviceTransform | None = None
    """The training group's PCA / int8 transform (None: the decoders read the encoder's levels as they are)."""

    @property
    def seed(self) -> int:
        return self.decoder.seeds[0]

    @property
    def dataset(self) -> dict[str, Any]:
        """The run's dataset facts (name, magnification, classes ...)."""
        return dict(self.decoder.run_config.dataset)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of classes 1..K; ``(UNTYPED_CLASS,)`` for runs without a type head."""
        n = self.decoder.n_types
        if n == 0:
            return (UNTYPED_CLASS,)
        names = tuple(self.dataset.get("classes", ()))
        return names if len(names) == n else tuple(f"Class {k}" for k in range(1, n + 1))

    @property
    def channels(self) -> int:
        """Stitched channels: 3 contour probabilities, 4 direction maps, then n_types + 1 type probabilities."""
        return map_channels(self.decoder.n_types)

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 tiles -> (B, channels, S, S) float32: contour softmax, directions, type softmax.

        The encoder runs under fp16 autocast on CUDA (as extraction does by default), the decoder in fp32.
        """
        images = torch.from_numpy(np.ascontiguousarray(tiles))
        device = self.decoder.device
        used: list[torch.Tensor] = []
        if self.decoder.levels:  # the no-encoder baseline reads no level: the encoder does not run
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                levels = self.encoder(images)
            used = [levels[k] if self.transform is None else decoder_inputs(self.transform, levels[k], k)
                    for k in self.decoder.levels]
        maps = predict_maps(self.decoder.models, used, tiles, device)[0]
        return np.stack([m.planes() for m in maps])


def choose_seed(run: str | Path, seed: int | None = None) -> int:
    """The seed whose best checkpoint ``predict`` uses.

    ``seed=None`` takes the seed whose ``best.safetensors`` records the lowest validation loss; seeds
    without a recorded loss rank last and ties go to the earlier seed of the run (so a one-seed run
    uses its seed, usually 0). Only seeds with a best checkpoint count.

    Raises
    ------
    EmbedstoreError : no run, no checkpoint at all, or ``seed`` is not a seed of the run with a checkpoint.
    """
    folder = RunDir(run)
    config = folder.read_config()
    trained = [int(s) for s in config.seeds if folder.checkpoint(int(s)).is_file()]
    if not trained:
        raise EmbedstoreError(f"--run {run}: no seed_<k>/best.safetensors checkpoint (has the run finished an epoch?)")
    if seed is not None:
        if seed not in trained:
            raise EmbedstoreError(f"--seed {seed}: {run} has best checkpoints for seeds {trained}")
        return seed

    def loss(s: int) -> float:
        value = read_metadata(folder.require_checkpoint(s)).get("val_loss")
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.inf

    return min(trained, key=loss)


def _encoder_weights(weights: str | Path | None, recorded: str | None) -> tuple[str | Path, int]:
    """(weights argument, seed) for ``build_encoder``; ``None`` means what the run recorded."""
    was_random = bool(recorded and recorded.startswith("random:"))
    random_seed = int(recorded.split(":", 1)[1]) if was_random and recorded else 0
    if weights is None:
        return ("random" if was_random else "hub"), random_seed
    return weights, random_seed


def load_run_model(run: str | Path, *, weights: str | Path | None = None, seed: int | None = None,
                   device: str = "auto", allow_fingerprint_mismatch: bool = False) -> RunModel:
    """Build a run's encoder and load one seed's best decoder.

    Parameters
    ----------
    run : training run folder (``config.json`` + ``seed_<k>/best.safetensors``).
    weights : encoder weights: ``"hub"``, ``"random"`` (seeded as the run recorded, ``random:<seed>``), a
        weights file, or None for what the run used (random when its fingerprint is ``random:<seed>``,
        otherwise the hub).
    seed : decoder seed; None = best validation loss (see :func:`choose_seed`).
    allow_fingerprint_mismatch : warn instead of failing when the encoder's weights fingerprint differs
        from the one the run's features were extracted with.

    Raises
    ------
    EmbedstoreError : no run or checkpoint, unavailable weights, or a fingerprint mismatch (unless allowed).
    """
    chosen = choose_seed(run, seed)
    decoder = load_run(run, seeds=(chosen,), device=device)
    config = decoder.run_config
    spec = EncoderSpec.from_dict(config.encoder) if config.encoder else get_spec(config.encoder_key)
    recorded = config.encoder_fingerprint
    weights_arg, random_seed = _encoder_weights(weights, recorded)
    encoder = build_encoder(spec, weights_arg, seed=random_seed, device=decoder.device)
    matches = encoder.fingerprint == recorded
    if not matches:
        message = (f"encoder {spec.key!r} weights have fingerprint {encoder.fingerprint}, but run {run} was "
                   f"trained on features extracted with {recorded}")
        if not allow_fingerprint_mismatch:
            raise EmbedstoreError(f"{message}; pass the weights it used or --allow-fingerprint-mismatch")
        warnings.warn(message, stacklevel=2)
    return RunModel(encoder=encoder, decoder=decoder, fingerprint_matches=matches,
                    transform=_training_transform(config.store, config.encoder_key, decoder, encoder))


def _training_transform(store: str, key: str, decoder: LoadedRun, encoder: FrozenEncoder) -> DeviceTransform | None:
    """The PCA / int8 transform of the group the run was trained on, read from its store; None when the
    group has none. A run whose decoders read fewer channels than the encoder gives (a PCA group) needs
    that store: without it the error says so in one line."""
    if not decoder.levels:
        return None
    try:
        group = open_store(store).features(key)
    except EmbedstoreError:
        group = None
    transform = load_transform(group) if group is not None else None
    if transform is not None and not transform.identity:
        return DeviceTransform(transform, decoder.device)
    cfg = decoder.models[0].cfg
    native = [c for c, _, _ in encoder.level_shapes(cfg.tile_size)]
    wanted = [cfg.level_dims[k] for k in decoder.levels]
    if [native[k] for k in decoder.levels] != wanted:
        raise EmbedstoreError(f"the run's decoders read {wanted} channels, the encoder gives "
                              f"{[native[k] for k in decoder.levels]}: it was trained on PCA-reduced features of "
                              f"{store}, and predict needs that store to project new images the same way")
    return None
