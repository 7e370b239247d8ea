"""Where each device's current run of steps began: the seasonal model's phase anchor.

A synchronous training job's steps stop for a checkpoint or an evaluation, and its loop
starts a fresh step — compute first — when it comes back. The phase of its steps after a
return therefore counts from the return, not from where its step clock stood before the
pause, and a seasonal forecast that reads the values whole periods before its target reads
the wrong phase (or the pause itself) for a while after each return. `StepRuns` follows, per
device, its busy level and its pauses (PAUSE_MIN periods or more below DROP of that level;
an all-reduce dip is shorter), and keeps where its current run began and where the run
before it lay, so that `seasonal_forecast` can read values of the target's own phase.

Pure computation on arrays (one entry per device), one `update` a period; times in periods.
The controller's learnt returns (forecast/returns.py) read the same tracker.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from powerflow.forecast.quantile import sorted_quantile
from powerflow.model.arrays import Floats

DROP = 0.8  # a period below this share of the busy level is a low one ...
PAUSE_MIN = 4  # ... and this many in a row a pause (an all-reduce dip spans at most 2-3)
BUSY_WINDOW = 30  # periods the busy level is the 90th percentile of (outside pauses)


def busy_level(recent: Floats, old: Floats) -> Floats:
    """Per column of `recent` (periods x devices, NaN in pauses): the 90th percentile of its
    values (np.quantile's linear rule), `old` where a column holds none. One sort, not
    np.nanquantile's per-column loop: a 1,000-device rack pays it every period."""
    n = (~np.isnan(recent)).sum(axis=0)
    v = sorted_quantile(np.sort(recent.T, axis=1), 0.9, np.maximum(n, 1))  # NaN sorts last
    return np.where(n > 0, v, old)


@dataclass(frozen=True)
class RunSpans:
    """Per device, in periods counted back from the newest (0 = the newest period):
    `run` periods make up the current run of steps (the newest included; 0 where the device
    is in a pause now, and no anchor applies); the run before it ended `gap` periods before
    the current one began and lasted `prev` periods (0: none known)."""

    run: NDArray[np.int64]
    gap: NDArray[np.int64]
    prev: NDArray[np.int64]


class StepRuns:
    def __init__(self, n_dev: int) -> None:
        self.t = 0  # periods seen
        self.recent: deque[Floats] = deque(maxlen=BUSY_WINDOW)
        self.busy = np.zeros(n_dev)  # W, each device's level outside pauses
        self.low = np.zeros(n_dev, np.int64)  # low periods in a row, up to the newest
        self.ended = np.zeros(n_dev, np.int64)  # the low run that ended this period (0: none)
        self.start = np.ones(n_dev, np.int64)  # period the current run began (1-based)
        self.prev_start = np.zeros(n_dev, np.int64)  # ... the run before it (0: none)
        self.prev_end = np.zeros(n_dev, np.int64)  # ... its first pause period

    def update(self, y: Floats) -> None:
        """Observe this period's power `y` (W per device)."""
        self.t += 1
        y = np.asarray(y, float)
        low = (y < DROP * self.busy) & (self.busy > 0)
        back = ~low & (self.low >= PAUSE_MIN)  # a pause ended: a new run begins now
        self.prev_start = np.where(back, self.start, self.prev_start)
        self.prev_end = np.where(back, self.t - self.low, self.prev_end)
        self.start = np.where(back, self.t, self.start)
        self.ended = np.where(low, 0, self.low)
        self.low = np.where(low, self.low + 1, 0)
        if not low.all():
            self.recent.append(np.where(low, np.nan, y))
            self.busy = busy_level(np.array(self.recent), self.busy)

    def spans(self) -> RunSpans:
        """The runs as `seasonal_forecast` reads them (see `RunSpans`)."""
        paused = self.low >= PAUSE_MIN
        run = np.where(paused, 0, self.t - self.start + 1)
        known = (self.prev_end > 0) & ~paused
        gap = np.where(known, self.start - self.prev_end, 0)
        prev = np.where(known, self.prev_end - self.prev_start, 0)
        return RunSpans(run=run.astype(np.int64), gap=gap.astype(np.int64),
                        prev=prev.astype(np.int64))
