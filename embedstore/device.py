"""Where torch work runs: one resolver for every command's ``--device`` option."""

from __future__ import annotations

import torch

from embedstore.errors import EmbedstoreError


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available; an unavailable explicit device is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EmbedstoreError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise EmbedstoreError(f"--device {device}: expected auto, cpu or cuda[:N]")
    return torch.device(device)
