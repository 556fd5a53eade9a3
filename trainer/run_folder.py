"""The run folder of `embed train`: its file names and its resolved configuration, in one place.

Training writes a run folder; inference, evaluate, predict and compare read it. They all go through
:class:`RunDir` for paths and :class:`RunConfig` for the configuration, so the layout is known here only::

    config.json          RunConfig: store, encoder key + fingerprint, decoder, dataset, data, optimisation
    metrics.jsonl/.csv   one row per epoch and seed
    curves.png           training curves
    seed_<k>/best.safetensors, last.safetensors, state.safetensors, state.json
    eval_<split>/metrics.json, tiles.csv, classes.csv, images.csv   (embed evaluate)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedstore.errors import EmbedstoreError

CONFIG = "config.json"
METRICS_LOG = "metrics.jsonl"
METRICS_TABLE = "metrics.csv"
CURVES = "curves.png"


def _resume(default: Any = None) -> Any:
    """A config field that a resumed run must share with the run it continues (``dict``/``list``: empty)."""
    if default in (dict, list):
        return field(default_factory=default, metadata={"resume": True})
    return field(default=default, metadata={"resume": True})


@dataclass
class RunConfig:
    """Resolved configuration of a training run (``config.json``).

    Fields marked ``resume`` in their metadata (:meth:`resume_fields`) must be equal for ``--resume``;
    the others (epochs, device, data summaries) may change between the first run and its continuation.
    """

    store: str
    encoder_key: str = _resume("")
    encoder_fingerprint: str | None = _resume(None)
    encoder: dict[str, Any] | None = None
    decoder: dict[str, Any] = _resume(dict)
    dataset: dict[str, Any] = _resume(dict)
    seeds: list[int] = _resume(list)
    data_seed: int = _resume(0)
    split_train: str = _resume("train")
    split_val: str = _resume("val")
    train_tiles: int = _resume(0)
    val_tiles: int = 0
    train_data: dict[str, Any] = field(default_factory=dict)
    val_data: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0
    batch_size: int = _resume(4)
    lr: float = _resume(5e-4)
    adam_eps: float = _resume(1e-7)
    clip_norm: float | None = _resume(None)
    lr_factor: float = _resume(0.5)
    lr_patience: int = _resume(10)
    stop_patience: int = _resume(20)
    loss_weights: dict[str, float] = _resume(dict)
    msge_maps: str = _resume("all")
    device: str = "cpu"
    embedstore: str = ""

    @classmethod
    def resume_fields(cls) -> tuple[str, ...]:
        """Names of the fields a resumed run must keep."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("resume"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in field order (the ``config.json`` content)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Read a ``config.json`` dict; unknown keys (written by a newer version) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        if "store" not in data:
            raise KeyError("store")
        return cls(**{k: v for k, v in data.items() if k in names})

    def differences(self, other: RunConfig) -> list[str]:
        """Resume fields whose values differ between ``self`` and ``other`` (compared as JSON)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [k for k in self.resume_fields() if mine.get(k) != theirs.get(k)]


@dataclass(frozen=True)
class RunDir:
    """Paths of one run folder (nothing is created until a writer asks for it)."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics_log(self) -> Path:
        return self.path / METRICS_LOG

    @property
    def metrics_table(self) -> Path:
        return self.path / METRICS_TABLE

    @property
    def curves(self) -> Path:
        return self.path / CURVES

    def is_run(self) -> bool:
        """Whether the folder holds a run (a ``config.json``)."""
        return self.config_path.is_file()

    def seed_dir(self, seed: int) -> Path:
        return self.path / f"seed_{seed}"

    def checkpoint(self, seed: int, which: str = "best") -> Path:
        """``seed_<seed>/<which>.safetensors`` (``which``: best or last), whether or not it exists."""
        return self.seed_dir(seed) / f"{which}.safetensors"

    def checkpoint_pattern(self, which: str = "best") -> str:
        """The ``which`` checkpoints of every seed as one glob pattern (``<run>/seed_*/<which>.safetensors``)."""
        return str(self.path / "seed_*" / f"{which}.safetensors")

    def require_checkpoint(self, seed: int, which: str = "best") -> Path:
        """:meth:`checkpoint`, refusing a missing file with a one-line error."""
        path = self.checkpoint(seed, which)
        if not path.is_file():
            raise EmbedstoreError(f"{path}: missing checkpoint of seed {seed}; was the run trained to the end?")
        return path

    def eval_dir(self, split: str) -> Path:
        return self.path / f"eval_{split}"

    def eval_metrics(self, split: str) -> Path:
        return self.eval_dir(split) / "metrics.json"

    def read_config(self) -> RunConfig:
        """The run's :class:`RunConfig`.

        Raises
        ------
        EmbedstoreError : no such folder, no config.json, or an unreadable one.
        """
        if not self.path.is_dir():
            raise EmbedstoreError(f"{self.path}: no such run folder")
        try:
            return RunConfig.from_dict(dict(json.loads(self.config_path.read_text())))
        except FileNotFoundError:
            raise EmbedstoreError(f"{self.path}: not a run folder (no config.json); train one with `embed train`"
                                  ) from None
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise EmbedstoreError(f"{self.config_path}: unreadable run config ({err})") from None

    def write_config(self, config: RunConfig) -> None:
        """Write ``config.json`` (creating the folder); a temporary file and a rename keep it whole."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(config.to_dict(), indent=1))
        tmp.replace(self.config_path)
