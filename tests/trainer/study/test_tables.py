"""`paired_gap`: run - baseline per shared seed, its mean, sd and Student-t interval."""

from __future__ import annotations

import math

import pytest

from embedstore.trainer.study.tables import paired_gap

T_975_DF2 = 4.302652729911275  # Student t quantile 0.975 with 2 degrees of freedom (printed tables: 4.303)


def test_the_gap_pairs_seeds_and_gives_a_t_interval() -> None:
    run = {"0": {"aji": 0.50}, "1": {"aji": 0.60}, "2": {"aji": 0.58}}
    base = {"0": {"aji": 0.40}, "1": {"aji": 0.45}, "2": {"aji": 0.52}}
    gap = paired_gap(run, base, "aji")
    diffs = [0.10, 0.15, 0.06]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    assert (gap.n, gap.mean, gap.sd) == (3, pytest.approx(mean), pytest.approx(sd))
    assert gap.high - gap.mean == pytest.approx(T_975_DF2 * sd / math.sqrt(3), rel=1e-9)
    assert gap.mean - gap.low == pytest.approx(gap.high - gap.mean)


def test_only_seeds_both_runs_scored_count() -> None:
    run = {"0": {"bpq": 0.5}, "1": {"bpq": math.nan}, "2": {"bpq": 0.7}, "3": {"bpq": 0.9}}
    base = {"0": {"bpq": 0.2}, "1": {"bpq": 0.1}, "2": {"bpq": 0.3}}
    gap = paired_gap(run, base, "bpq")
    assert gap.n == 2 and gap.mean == pytest.approx(((0.5 - 0.2) + (0.7 - 0.3)) / 2)


def test_one_shared_seed_has_a_difference_but_no_spread() -> None:
    gap = paired_gap({"0": {"f1": 0.8}}, {"0": {"f1": 0.5}, "1": {"f1": 0.4}}, "f1")
    assert gap.n == 1 and gap.mean == pytest.approx(0.3)
    assert math.isnan(gap.sd) and math.isnan(gap.low) and math.isnan(gap.high)
    assert paired_gap({}, {"0": {"f1": 0.5}}, "f1").n == 0
