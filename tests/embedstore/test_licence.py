"""Licence records travel with the features, and restricted models get the notice that features follow them."""

from __future__ import annotations


from embedstore.encoders import get_spec
from embedstore.encoders.licence import licence_notice, licence_record
from embedstore.store.info import describe_store


def test_gated_non_commercial_encoders_carry_the_terms_notice_and_their_model_page() -> None:
    record = licence_record(get_spec("uni"))
    assert record == {"licence": "CC-BY-NC-ND-4.0", "gated": True, "model_page": "https://huggingface.co/MahmoodLab/UNI",
                      "restricted": True}
    notice = licence_notice("uni", record)
    assert "https://huggingface.co/MahmoodLab/UNI" in notice and "fall under the model's terms" in notice


def test_open_licences_get_no_terms_notice() -> None:
    record = licence_record(get_spec("dinov2-l"))
    assert record["restricted"] is False and "model's terms" not in licence_notice("dinov2-l", record)


def test_info_shows_each_groups_licence_and_digests(tiny_store) -> None:
    d = describe_store(tiny_store(8))
    group = d["encoders"]["tiny-vit"]
    assert group["licence"]["licence"] == "n/a (random weights only)"
    assert group["digest"].startswith("sha256:") and d["dataset_digest"].startswith("sha256:")
    assert d["licence_notices"] == ["features/tiny-vit: encoder weights licence n/a (random weights only)"]
    assert group["created"] and group["weights_source"] == "random:0"
