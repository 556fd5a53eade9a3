"""Checkpoints without pickle: weights and optimizer tensors in safetensors, the rest in JSON.

A seed folder of a run holds ``best.safetensors`` and ``last.safetensors`` (decoder weights; the decoder
config and the epoch in the file's metadata, so either file rebuilds its decoder alone), and the training
state needed to continue bit for bit: ``state.safetensors`` (optimizer tensors) and ``state.json``
(optimizer hyper-parameters and step counters, scheduler, early stopping, position in the epoch). Every
file is written to a temporary name and renamed, so a kill leaves the previous version intact; all three
"last" files carry the same ``position`` and a resume refuses files that disagree.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from embedstore.errors import EmbedstoreError
from embedstore.trainer.model.decoder import CellDecoder, DecoderConfig, build_decoder


def save_weights(path: Path, model: nn.Module, metadata: dict[str, Any]) -> None:
    """Write ``model``'s state dict to ``path`` atomically; ``metadata`` values are stored as JSON text."""
    tmp = path.with_name(path.name + ".tmp")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp), metadata={k: json.dumps(v) for k, v in metadata.items()})
    os.replace(tmp, path)


def read_metadata(path: Path) -> dict[str, Any]:
    """The JSON metadata of a weights file (decoder config, epoch, seed, ...)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    except (OSError, SafetensorError, json.JSONDecodeError) as err:
        raise EmbedstoreError(f"{path}: not a readable checkpoint ({err})") from None


def load_weights(path: Path, model: nn.Module) -> dict[str, Any]:
    """Load weights into ``model`` (exact key and shape match required); return the file's metadata."""
    meta = read_metadata(path)
    try:
        model.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    except RuntimeError as err:
        raise EmbedstoreError(f"{path}: weights do not fit this decoder ({str(err).splitlines()[0]})") from None
    return meta


def load_decoder(path: str | Path) -> CellDecoder:
    """Rebuild a trained decoder from ``best.safetensors`` / ``last.safetensors`` alone (CPU, eval mode)."""
    path = Path(path)
    meta = read_metadata(path)
    if "decoder" not in meta:
        raise EmbedstoreError(f"{path}: no decoder config in the checkpoint metadata")
    model = build_decoder(DecoderConfig.from_dict(meta["decoder"]))
    load_weights(path, model)
    return model.eval()


def save_state(folder: Path, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Write the optimizer's tensors (``state.safetensors``) and ``state`` + its other fields (``state.json``)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entries in sd["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{name}"] = value
    tmp = folder / "state.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"position": json.dumps(state.get("position"))})
    os.replace(tmp, folder / "state.safetensors")
    payload = {**state, "optimizer": {"param_groups": sd["param_groups"], "scalars": scalars}}
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, folder / "state.json")


def load_state(folder: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore the optimizer from ``folder`` and return the saved state dict (without the optimizer part)."""
    try:
        payload = json.loads((folder / "state.json").read_text())
        tensors = load_file(str(folder / "state.safetensors"), device="cpu")
        with safe_open(str(folder / "state.safetensors"), framework="pt") as f:
            position = json.loads((f.metadata() or {}).get("position", "null"))
    except (OSError, SafetensorError, json.JSONDecodeError) as err:
        raise EmbedstoreError(f"{folder}: cannot read the training state to resume ({err})") from None
    if position != payload.get("position"):
        raise EmbedstoreError(f"{folder}: state.json and state.safetensors are from different steps; cannot resume")
    opt = payload.pop("optimizer")
    entries: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *opt["scalars"].items()]:
        index, name = key.split(".", 1)
        entries.setdefault(int(index), {})[name] = value
    try:
        optimizer.load_state_dict({"state": entries, "param_groups": opt["param_groups"]})
    except (ValueError, KeyError) as err:
        raise EmbedstoreError(f"{folder}: optimizer state does not fit this decoder ({err})") from None
    return payload
