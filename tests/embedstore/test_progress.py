"""The progress bar's rate: items advanced in this bar over its elapsed time, never a burst's spike."""

from __future__ import annotations

import re
import time

import pytest

from embedstore.progress import progress_bar, rate_text


def test_the_rate_is_items_over_elapsed_seconds() -> None:
    assert rate_text(10, 4.0, "tiles") == "2.5 tiles/s"
    assert rate_text(0, 4.0, "tiles") == "" and rate_text(3, 0.0, "tiles") == "" and rate_text(3, None, "x") == ""


def test_a_burst_and_finished_items_do_not_inflate_the_rate(capsys: pytest.CaptureFixture[str]) -> None:
    """6 tiles done before, 4 arriving in one burst after 0.3 s: 10/10 shown, at most 4 / 0.3 tiles/s."""
    start = time.perf_counter()
    with progress_bar("score", total=10, unit="tiles", done=6) as advance:
        time.sleep(0.3)
        for _ in range(4):
            advance(1)  # ordered results of a pool arrive together
    elapsed = time.perf_counter() - start
    out = capsys.readouterr().out
    assert "10/10" in out
    rate = float(re.search(r"([\d.]+) tiles/s", out).group(1))
    assert 4 / elapsed * 0.9 <= rate <= 4 / 0.3
