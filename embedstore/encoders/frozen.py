"""A frozen encoder: uint8 tiles in, four NCHW feature levels out; and the one function that builds it."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from embedstore.encoders.levels import prune, take_levels
from embedstore.encoders.registry import get_spec
from embedstore.encoders.spec import EncoderSpec, create_network
from embedstore.encoders.weights import fetch_hub_weights, file_sha256, load_checked, read_state_dict
from embedstore.errors import EmbedstoreError


class FrozenEncoder(torch.nn.Module):
    """An encoder in eval mode without gradients that does its own preprocessing.

    Attributes
    ----------
    spec : the registry row it was built from.
    model : the pruned timm network (blocks after the deepest level and the head removed).
    fingerprint : ``"sha256:<hex of the weights file>"`` or ``"random:<seed>"``.
    weights_source : ``"hf-hub:<repo>@<commit>"``, ``"file:<path>"`` or ``"random:<seed>"``.
    """

    def __init__(self, spec: EncoderSpec, model: torch.nn.Module, *, fingerprint: str, weights_source: str):
        super().__init__()
        self.spec = spec
        self.model = model.eval().requires_grad_(False)
        self.fingerprint = fingerprint
        self.weights_source = weights_source
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        self._shapes: dict[int, list[tuple[int, int, int]]] = {}

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Stay in eval mode whatever a parent module asks: the encoder is frozen."""
        return super().train(False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 on any device -> (B, 3, h, w) float32 network input on the encoder's device.

        Scales to [0, 1], resizes per ``spec.resize`` (bicubic with antialiasing, clamped to [0, 1] like a
        uint8 resize would be), then normalises with the spec's mean/std. One float copy, then in place.
        """
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
            raise EmbedstoreError(
                f"encoder {self.spec.key!r} takes images as (B, H, W, 3) uint8, "
                f"got {tuple(images.shape)} {images.dtype}"
            )
        height, width = images.shape[1:3]
        size = (self.spec.input_side(height), self.spec.input_side(width))
        patch = self.spec.patch_size
        if patch and self.spec.resize == "none" and (height % patch or width % patch):
            raise EmbedstoreError(
                f"encoder {self.spec.key!r} needs tiles whose sides are multiples of {patch}, got {height}x{width}"
            )
        x = images.to(self.mean.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        if size != (height, width):
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)
        return x.sub_(self.mean).div_(self.std)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Four feature levels for a batch of tiles.

        Parameters
        ----------
        images : (B, H, W, 3) uint8, NHWC as stored; moved to the encoder's device here.

        Returns
        -------
        Four float tensors (B, C_k, h_k, w_k), prefix tokens dropped; for 256 x 256 tiles C_k and h_k = w_k
        are ``spec.dims[k]`` and ``spec.grids[k]``. Run under an autocast context for mixed precision.
        """
        return take_levels(self.model, self.spec, self.preprocess(images))

    def level_shapes(self, tile_size: int = 256) -> list[tuple[int, int, int]]:
        """(C, h, w) per level for square tiles of ``tile_size``, measured once with a blank tile."""
        if tile_size not in self._shapes:
            out = self(torch.zeros(1, tile_size, tile_size, 3, dtype=torch.uint8))
            self._shapes[tile_size] = [(t.shape[1], t.shape[2], t.shape[3]) for t in out]
        return list(self._shapes[tile_size])


def build_encoder(spec: EncoderSpec | str, weights: str | Path = "hub", *, seed: int = 0,
                  device: str | torch.device = "cpu") -> FrozenEncoder:
    """Build a frozen encoder with pretrained, local or seeded random weights.

    Parameters
    ----------
    spec : an ``EncoderSpec`` or a name for ``get_spec`` (``"uni"``, ``"timm:resnet18"`` ...).
    weights : ``"hub"`` (download or reuse the Hugging Face cache; HF_HOME, HF_TOKEN and HF_HUB_OFFLINE
        are honoured), ``"random"`` (``torch.manual_seed(seed)`` before building; the caller's RNG state is
        left untouched) or a path to a safetensors / torch weights file in timm layout.
    seed : seed of the random initialisation (only weights that no file provides keep it).
    device : where the network and its preprocessing run.

    Raises
    ------
    EmbedstoreError
        Unknown encoder, hub access or cache problems, unreadable or mismatching weights files.
    """
    spec = get_spec(spec) if isinstance(spec, str) else spec
    state = None
    if isinstance(weights, str) and weights == "random":
        fingerprint = source = f"random:{seed}"
    else:
        if isinstance(weights, str) and weights == "hub":
            path, source = fetch_hub_weights(spec)
        else:
            path = Path(weights).expanduser().resolve()
            source = f"file:{path}"
        state = read_state_dict(path)
        fingerprint = file_sha256(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_network(spec)
    known = set(model.state_dict())
    prune(model, spec)
    if state is not None:
        load_checked(model, state, known, str(path), spec)
    return FrozenEncoder(spec, model, fingerprint=fingerprint, weights_source=source).to(device)
