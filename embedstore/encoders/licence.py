"""The licence of an encoder's weights, carried into every feature group made with it.

Features derived from a gated or non-commercial model fall under that model's terms, so a shared
store says which terms apply: `embed info` shows them and `embed pack` / `embed push` print them
before writing anything (a notice, not legal advice).
"""

from __future__ import annotations

from typing import Any

from embedstore.encoders.spec import EncoderSpec

HUB_PREFIX = "hf-hub:"


def model_page(source: str) -> str:
    """The model's web page: ``https://huggingface.co/<repo>`` for hub weights, timm's page otherwise."""
    if source.startswith(HUB_PREFIX):
        return f"https://huggingface.co/{source.removeprefix(HUB_PREFIX).split('@', 1)[0]}"
    return f"https://huggingface.co/timm/{source}" if source and source != "random" else ""


def licence_fields(licence: str, gated: bool, source: str) -> dict[str, Any]:
    """``{licence, gated, model_page, restricted}`` for a feature group's attributes.

    ``restricted``: the terms limit use (gated access or a non-commercial licence), so a notice is due.
    """
    text = licence or "unknown"
    restricted = bool(gated) or "nc" in text.lower().replace("-", " ").split()
    return {"licence": text, "gated": bool(gated), "model_page": model_page(source), "restricted": restricted}


def licence_record(spec: EncoderSpec) -> dict[str, Any]:
    """:func:`licence_fields` of a registered encoder."""
    return licence_fields(spec.licence, spec.gated, spec.source)


def licence_notice(key: str, record: dict[str, Any]) -> str:
    """One line for info / pack / push: the licence, and for restricted models that the features follow it."""
    page = f" ({record['model_page']})" if record.get("model_page") else ""
    line = f"features/{key}: encoder weights licence {record.get('licence', 'unknown')}{page}"
    if record.get("restricted"):
        line += ("; features derived from this model fall under the model's terms, and collaborators need "
                 "their own access to it (this is not legal advice)")
    return line
