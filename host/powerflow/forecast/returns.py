"""Returns from pauses, learnt: a periodic device's pauses repeat their lengths.

A synchronous training job leaves its steps for a checkpoint or an evaluation and comes back
all at once. How long the pause lasts is beyond the seasonal model (a pause is longer than
the job's step, and comes every few minutes, beyond its window), so the forecaster follows
the device down and is surprised by the return — the moment lower classes have just been
given the pause's room. But a job's pauses of one kind repeat: the same checkpoint takes the
same time. `ReturnMemory` remembers, per device, the level and length of its last pauses;
when a stepping device (a period found, and its steps' dips seen lately) is in a pause at
the level of one it has seen, the return is expected after that one's length, and the
device's forecast (mean and bound) is raised to its busy level over the horizons the return
falls in, give or take a period. Measured on training-jobs over five seeds
(bench/RESULTS.md): feed-limit violations 1.0 → 0.6 a run, capped energy unchanged.

After any return of a stepping device, its steps start again and for one step period the
seasonal model's lags fall in the pause (it would forecast the pause's level, or its dips
out of phase): the device's bound is held at its busy level over that period.

What a pause is, and each device's busy level, come from the forecaster's own tracker of
runs and pauses (`StepRuns`, forecast/runs.py), which also anchors the seasonal model's
phase: one tracker, one rule.

While such a device is in a pause whose return is expected later than ROOM_AHEAD periods
from now, the memory also says what a pause hint would (`room`): the device stays low over
the next periods, so the caps need keep it only what it draws now and a margin, not its
whole ceiling, and lower classes get the rest. Room, not a cap: a device that comes back
early is not held back, and the next period keeps it its ceiling again.

It only ever raises a forecast, never lowers one. Pure computation on arrays (one column per
device), one `step` a control period; lengths and times in periods.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from numpy.typing import NDArray

from powerflow.forecast.runs import BUSY_WINDOW, PAUSE_MIN, StepRuns
from powerflow.model.arrays import Floats

MATCH = 0.15  # a pause is of a kind seen before within this share of the busy level
REMEMBER = 4  # pauses remembered per device
# periods a return may come before or after the expected one (a pause's length is counted
# in whole periods, and its first or last may straddle a step's dip): the forecast is raised
# over the horizons within this of it
JITTER = 1
# room is given while the return is expected later than this many periods from now (past the
# period the caps are set for, and JITTER), as a pause hint gives it
ROOM_AHEAD = 2 + JITTER


class ReturnMemory:
    def __init__(self, n_dev: int, runs: StepRuns | None = None) -> None:
        """`runs`: the tracker of each device's runs of steps and pauses that the forecaster
        keeps (forecast/runs.py), updated with each period's power before `step` — one
        tracker, one rule for what a pause is; without one, a tracker of its own, updated
        by `step`."""
        self.n = n_dev
        self.own = runs is None
        self.runs = StepRuns(n_dev) if runs is None else runs
        self.level_sum = np.zeros(n_dev)  # W, summed over the current low run
        self.periodic = np.zeros(n_dev, bool)  # whether it was stepping when the run began
        self.dips = np.full((n_dev, 2), -np.inf)  # when its last two short dips ended
        self.seen: list[deque[tuple[float, int]]] = [deque(maxlen=REMEMBER)
                                                     for _ in range(n_dev)]  # (W, periods)
        self.back_until = np.zeros(n_dev, np.int64)  # period up to which a return is held
        # W of room the caps need keep each device (NaN: its ceiling), from the last `step`
        self.room = np.full(n_dev, np.nan)

    def step(self, y: Floats, lags: NDArray[np.int64], means: dict[int, Floats],
             uppers: dict[int, Floats], free: NDArray[np.bool_] | None = None
             ) -> tuple[dict[int, Floats], dict[int, Floats]]:
        """Observe this period's power `y` (W) and the devices' periods `lags` (0: none);
        return the forecasts (per horizon in periods, W per device) with expected returns
        raised, as new arrays, and set `room`. `free`: the devices whose power is their own
        (no cap held them at it while measured; default all) — a capped device's power says
        nothing of whether it is paused, and is given no room."""
        y = np.asarray(y, float)
        r = self.runs
        if self.own:
            r.update(y)
        t, low, busy = r.t, r.low > 0, r.busy
        lags = np.asarray(lags)
        for k in np.flatnonzero((r.ended >= PAUSE_MIN) & self.periodic):
            length = int(r.ended[k])
            self.seen[k].append((float(self.level_sum[k] / length), length))  # learnt
            # back: its steps start again, and for a step period the seasonal model's lags
            # fall in the pause — its bound is held at the busy level meanwhile
            self.back_until[k] = t + max(int(lags[k]), 1)
        dip = (r.ended > 0) & (r.ended < PAUSE_MIN)
        self.dips[dip] = np.stack([self.dips[dip, 1], np.full(int(dip.sum()), t)], 1)
        began = r.low == 1
        # stepping: a period found, and two step dips (all-reduce) seen lately — what a
        # training job does, and a batch job's gaps or an inference burst's end do not
        self.periodic[began] = ((lags > 0) & (self.dips[:, 0] >= t - BUSY_WINDOW))[began]
        self.level_sum = np.where(low, self.level_sum + y, 0.0)
        means = {h: m.copy() for h, m in means.items()}
        uppers = {h: m.copy() for h, m in uppers.items()}
        self.room = np.full(self.n, np.nan)
        free = np.ones(self.n, bool) if free is None else np.asarray(free, bool)
        for h in uppers:  # back lately: the bound held at the busy level (vectorised)
            held = self.back_until >= t + h
            uppers[h] = np.where(held, np.maximum(uppers[h], busy), uppers[h])
        for k in np.flatnonzero((r.low >= PAUSE_MIN) & self.periodic):
            level = self.level_sum[k] / r.low[k]
            start = t - int(r.low[k]) + 1  # the pause's first period
            # the periods it is expected back in (one per pause of its kind remembered), the
            # soonest not yet behind by more than JITTER
            backs = [start + n for lv, n in self.seen[k] if abs(lv - level) <= MATCH * busy[k]]
            backs = [b for b in backs if b + JITTER > t]
            if not backs:
                continue
            back = min(backs)
            if back > t + ROOM_AHEAD and free[k]:  # low until after the period capped for
                self.room[k] = y[k] + MATCH * busy[k]
            for h in means:
                if abs(t + h - back) <= JITTER:
                    means[h][k] = max(means[h][k], busy[k])
                    uppers[h][k] = max(uppers[h][k], busy[k])
        return means, uppers
