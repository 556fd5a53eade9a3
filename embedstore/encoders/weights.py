"""Where encoder weights come from and how they are checked: hub download, local files, fingerprints.

Weights files must hold the timm state dict of the spec's architecture (the layout of the hub files);
``timm.models.load_state_dict`` reads them (``torch.load(weights_only=True)``: a pickle is never run) and
removes a ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper and ``module.`` prefixes; a ``model.``
prefix on every key is removed here. Keys of parts the encoder never runs (head, final norm, blocks after
the deepest level) may be present or absent; anything else that does not match is an error naming the file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Mapping
from pathlib import Path

import safetensors
import timm
import torch
from huggingface_hub import constants, get_token, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

from embedstore.encoders.spec import EncoderSpec
from embedstore.errors import EmbedstoreError

HUB_PREFIX = "hf-hub:"
HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")
_CHUNK = 16 << 20


def file_sha256(path: Path) -> str:
    """``"sha256:<hex>"`` of a file's bytes, read in 16 MiB chunks (seconds for a multi-GB checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache as the environment says *now*: HF_HUB_CACHE, else HF_HOME/hub, else
    ``huggingface_hub.constants.HF_HUB_CACHE`` (its default, fixed when huggingface_hub was imported)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set *now* (huggingface_hub's own flag is read once, at import), or at import."""
    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in constants.ENV_VARS_TRUE_VALUES


def _hub_repo(spec: EncoderSpec) -> tuple[str, str | None, tuple[str, ...]]:
    """(repo id, revision or None, candidate file names) holding the spec's pretrained weights."""
    if spec.source.startswith(HUB_PREFIX):
        return spec.source[len(HUB_PREFIX):], None, HUB_FILENAMES
    cfg = timm.models.get_pretrained_cfg(spec.source) if spec.source != "random" else None
    if cfg is None or not cfg.hf_hub_id:
        raise EmbedstoreError(
            f"encoder {spec.key!r} has no published weights on the Hugging Face Hub; "
            "use --weights PATH (a local safetensors/torch file) or --weights random"
        )
    repo, _, revision = cfg.hf_hub_id.partition("@")
    return repo, revision or None, (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HUB_FILENAMES


def fetch_hub_weights(spec: EncoderSpec) -> tuple[Path, str]:
    """Download (or find in the cache) the spec's weights file; return (path, ``"hf-hub:<repo>@<commit>"``).

    Honours HF_HOME / HF_HUB_CACHE, HF_HUB_OFFLINE and HF_TOKEN as set when called.

    Raises
    ------
    EmbedstoreError
        One line saying how to get access when the repo is gated or missing, the cache is empty while
        offline, or nothing can be downloaded.
    """
    repo, revision, filenames = _hub_repo(spec)
    offline = hub_offline()
    cache = hub_cache_dir()
    hint = (
        f"if the model is gated, accept its licence on https://huggingface.co/{repo} and log in "
        "(`huggingface-cli login` or HF_TOKEN); or use --weights PATH (a local safetensors/torch file) "
        "or --weights random"
    )
    for filename in filenames:
        try:
            path = Path(hf_hub_download(
                repo, filename, revision=revision, cache_dir=cache, local_files_only=offline,
                token=get_token(),
            ))
        except RepositoryNotFoundError as err:  # also GatedRepoError: no access with the current token
            raise EmbedstoreError(f"no access to {repo} for encoder {spec.key!r}: {hint}") from err
        except EntryNotFoundError:  # not in this repo, or (LocalEntryNotFoundError) not cached while offline
            continue
        except HfHubHTTPError as err:
            raise EmbedstoreError(f"cannot download {repo} for encoder {spec.key!r} ({err}); {hint}") from err
        return path, f"{HUB_PREFIX}{repo}@{path.parent.name}"
    where = f"HF_HUB_OFFLINE is set and {repo} is not in the cache {cache}" if offline else (
        f"none of {', '.join(filenames)} could be fetched from {repo} (no network and not in the cache {cache})"
    )
    raise EmbedstoreError(f"cannot get weights for encoder {spec.key!r}: {where}; {hint}")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors or torch (``weights_only=True``) weights file, unwrapped and de-prefixed.

    Raises
    ------
    EmbedstoreError
        If the file is missing, unreadable, or does not hold a flat mapping of names to tensors.
    """
    if not path.is_file():
        raise EmbedstoreError(f"weights file {path} does not exist (pass a file, 'hub' or 'random')")
    try:
        state = timm.models.load_state_dict(str(path), use_ema=False, device="cpu", weights_only=True)
    except (safetensors.SafetensorError, RuntimeError, OSError, ValueError) as err:
        raise EmbedstoreError(f"cannot read weights file {path}: {err}") from err
    except AttributeError as err:  # timm's key cleaning met a file that is not a mapping
        raise EmbedstoreError(f"weights file {path} does not hold a state dict (names -> tensors)") from err
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EmbedstoreError(f"weights file {path} does not hold a state dict (names -> tensors)")
    if state and all(k.startswith("model.") for k in state):
        state = {k[len("model."):]: v for k, v in state.items()}
    return state


def load_checked(model: torch.nn.Module, state: Mapping[str, torch.Tensor], known: Collection[str],
                 origin: str, spec: EncoderSpec) -> None:
    """Copy ``state`` into the (pruned) ``model``; every kept tensor must be present with its shape.

    Parameters
    ----------
    model : the pruned network; all of its state dict entries must come from ``state``.
    state : weights read from ``origin``.
    known : state dict keys of the *full* network; keys in ``state`` outside it are a mismatch, keys
        inside it that the pruned network dropped (head, trailing blocks) are ignored.
    origin : the file, named in errors.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(known))
    wrong = sorted(k for k in own if k in state and state[k].shape != own[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing (e.g. {', '.join(missing[:3])})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})" if unexpected else "",
                 f"{len(wrong)} with another shape (e.g. {wrong[0]}: file {tuple(state[wrong[0]].shape)}, "
                 f"model {tuple(own[wrong[0]].shape)})" if wrong else ""]
        raise EmbedstoreError(
            f"weights file {origin} does not fit encoder {spec.key!r} ({spec.architecture}): "
            + "; ".join(p for p in parts if p)
        )
    model.load_state_dict({k: state[k] for k in own}, strict=True)
