"""np.quantile's default (linear) rule on rows already sorted, with a level and a count of
its own per row: what the forecasters' bands and busy levels need for a whole rack at once,
where np.quantile / np.nanquantile would loop over the rows."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from powerflow.model.arrays import Floats


def sorted_quantile(data: Floats, level: Floats | float, n: NDArray[np.int64] | int
                    ) -> Floats:
    """Per row of `data` (sorted ascending along its rows), the quantile at that row's
    `level` (0..1) of its first `n` values (n >= 1)."""
    n = np.asarray(n)
    pos = np.asarray(level) * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    rows = np.arange(len(data))
    return data[rows, lo] + (pos - lo) * (data[rows, hi] - data[rows, lo])
