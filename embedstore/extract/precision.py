"""Precision of extraction: the ``--dtype`` vocabulary and the stored dtype, importable without torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

from embedstore.errors import EmbedstoreError

if TYPE_CHECKING:
    import torch

ComputeDtype = Literal["auto", "fp16", "bf16", "fp32"]
"""Compute precision of the encoder forward pass (``auto``: fp16 on CUDA, fp32 on CPU)."""


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """``auto`` computes in fp16 on CUDA and fp32 on CPU (CPU half precision is slow and lossy)."""
    if dtype == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if dtype not in get_args(ComputeDtype):
        raise EmbedstoreError(f"--dtype {dtype}: expected auto, fp16, bf16 or fp32")
    return dtype


def storage_dtype(requested: str) -> str:
    """Features are stored as float16 (half the bytes) unless fp32 was asked for explicitly."""
    return "float32" if requested == "fp32" else "float16"
