"""The NaN-aware reductions every metric shares: one mean that skips NaN, one ratio that is NaN on 0/0."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt


def nanmean(values: npt.ArrayLike) -> float:
    """Mean over the non-NaN entries of any-shaped ``values``; NaN (without a warning) when there are none."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan


def ratio(num: float, den: float) -> float:
    """``num / den``, NaN where ``den`` is not positive (an empty count makes a rate undefined, not 0)."""
    return num / den if den > 0 else math.nan
