"""The online forecasters of every device of a rack at once, as arrays.

Same models, same arithmetic as `OnlineForecaster` (persistence, per-horizon RLS ridge on
the change from persistence, the rolling mean, the seasonal model read in each device's
current run of steps, the selector by recent error, the adaptive-conformal P95 bound of the
selected forecast), but one NumPy operation per step covers all D devices
instead of D Python loops: what keeps the control cycle of a 1,000-converter rack within
its period. `tests/forecast/test_batch.py` checks it against `OnlineForecaster`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from powerflow.forecast.models import (BAND_MIN, BAND_WINDOW, LAGS, SEASON_EVERY,
                                       SEASON_MIN_HISTORY, SEASON_WINDOW, SWITCH_MARGIN,
                                       WINDOWS, band_window, season_lags, seasonal_forecast,
                                       selector_decay)
from powerflow.forecast.quantile import sorted_quantile
from powerflow.forecast.runs import StepRuns
from powerflow.model.arrays import Floats

MEAN_WINDOW = 120  # as RollingMean's default
MODELS = ("persistence", "ridge", "mean", "seasonal")  # in the order `step` reports them
SEASONAL = MODELS.index("seasonal")



class BatchForecaster:
    def __init__(self, n_dev: int, horizons: tuple[int, ...], n_exog: int = 0, q: float = 0.95,
                 keep: int = 600, lam: float = 0.99, prior: float = 0.01,
                 halflife: float = 120.0, window: int = BAND_WINDOW, gamma: float = 0.005
                 ) -> None:
        self.d, self.h = n_dev, tuple(sorted(horizons))
        self.n_exog = n_exog
        self.keep = keep
        self.y = np.zeros((n_dev, keep))  # ring buffers, newest at index (count - 1) % keep
        self.x = np.zeros((n_dev, keep, n_exog))
        self.count = 0
        self.nf = 2 + len(LAGS) + len(WINDOWS) + 1 + (1 + len(LAGS)) * n_exog
        nh = len(self.h)
        self.lam = lam
        self.w = np.zeros((nh, n_dev, self.nf))
        self.p = np.broadcast_to(np.eye(self.nf) * prior, (nh, n_dev, self.nf, self.nf)).copy()
        self.p_max_trace = self.nf * prior * 1e4
        hmax = max(self.h) + 1
        self.f_hist = np.zeros((hmax, n_dev, self.nf))  # features and levels of recent periods
        self.y_hist = np.zeros((hmax, n_dev))
        self.scale = np.ones(n_dev)
        self.decay = [selector_decay(halflife, h) for h in self.h]
        # per horizon, device, model (persistence, ridge, mean, seasonal)
        self.err = np.zeros((nh, n_dev, len(MODELS)))
        self.lags = np.zeros(n_dev, np.int64)  # each device's period (periods; 0: none)
        self.runs = StepRuns(n_dev)  # where each device's current run of steps began
        self.seen = np.zeros(nh, np.int64)
        self.q, self.gamma = q, gamma
        self.alpha = np.full((nh, n_dev), 1.0 - q)
        self.win = np.zeros((nh, n_dev, window))
        self.win_n = np.zeros(nh, np.int64)
        # forecasts waiting for their target: (due step, per-model means, selected, margin)
        self.pending: list[list[tuple[int, Floats, Floats, Floats]]] = [[] for _ in self.h]
        self.t = 0

    # ---- features --------------------------------------------------------------------------
    def _at(self, back: int) -> Floats:
        """y `back` periods before the newest (0 = newest), for every device."""
        return self.y[:, (self.count - 1 - back) % self.keep]

    def _features(self) -> Floats:
        n = self.count
        y = self._at(0)
        cols = [np.ones(self.d), y]
        for k in LAGS:
            cols.append(y - self._at(k) if n > k else np.zeros(self.d))
        order = (np.arange(n - min(n, self.keep), n)) % self.keep
        arr = self.y[:, order]
        for w in WINDOWS:
            cols.append(arr[:, -w:].mean(axis=1) - y)
        cols.append(arr[:, -60:].std(axis=1) if n > 1 else np.zeros(self.d))
        if self.n_exog:
            xi = (n - 1) % self.keep
            x = self.x[:, xi, :]
            cols.extend(x.T)
            for k in LAGS:
                dx = x - self.x[:, (n - 1 - k) % self.keep, :] if n > k else np.zeros_like(x)
                cols.extend(dx.T)
        return np.stack(cols, axis=1)

    # ---- one period ------------------------------------------------------------------------
    def step(self, y: Floats, x: Floats | None = None, stale: Floats | None = None
             ) -> tuple[dict[int, Floats], dict[int, Floats], dict[int, Floats]]:
        """Observe y (W, per device) and x (D x n_exog); returns per horizon the selected mean,
        its P95 upper bound, and which model was selected (its index in MODELS)."""
        y = np.asarray(y, float)
        x = np.zeros((self.d, self.n_exog)) if x is None else np.asarray(x, float)
        stale = np.zeros(self.d, bool) if stale is None else np.asarray(stale, bool)
        self.t += 1
        for hi, h in enumerate(self.h):  # score the forecasts whose target this is
            q = self.pending[hi]
            while q and q[0][0] <= self.t:
                _, past, sel, margin = q.pop(0)
                errs = np.abs(y[:, None] - past)
                self.err[hi] = self.decay[hi] * self.err[hi] + (1 - self.decay[hi]) * errs
                self.seen[hi] += 1
                resid = y - sel
                miss = (resid > margin).astype(float)
                self.alpha[hi] += self.gamma * ((1.0 - self.q) - miss)
                self.win[hi, :, self.win_n[hi] % self.win.shape[2]] = resid
                self.win_n[hi] += 1
        slot = self.count % self.keep
        self.y[:, slot] = y
        self.x[:, slot, :] = x
        self.count += 1
        self.runs.update(y)
        f_now = self._features()
        if self.count <= 50:
            order = (np.arange(self.count)) % self.keep
            self.scale = np.maximum(1.0, np.abs(self.y[:, order]).mean(axis=1))
        hmax = self.f_hist.shape[0]
        for hi, h in enumerate(self.h):  # learn from every horizon whose target is now known
            if self.count - 1 >= h:
                back = (self.count - 1 - h) % hmax
                f = self.f_hist[back] / self.scale[:, None]
                f[:, 0] = 1.0
                self._rls(hi, f, (y - self.y_hist[back]) / self.scale)
        cur = (self.count - 1) % hmax
        self.f_hist[cur], self.y_hist[cur] = f_now, y
        g = f_now / self.scale[:, None]
        g[:, 0] = 1.0
        means: dict[int, Floats] = {}
        uppers: dict[int, Floats] = {}
        models: dict[int, Floats] = {}
        n = min(self.count, MEAN_WINDOW)
        level = self.y[:, (np.arange(self.count - n, self.count)) % self.keep].mean(axis=1)
        rows = np.arange(self.d)
        span = min(self.count, self.keep, SEASON_WINDOW)
        recent = self.y[:, np.arange(self.count - span, self.count) % self.keep]
        if self.count % SEASON_EVERY == 0 and min(self.count, self.keep) >= SEASON_MIN_HISTORY:
            self.lags = season_lags(recent)
        spans = self.runs.spans()
        for hi, h in enumerate(self.h):
            ridge = y + np.einsum("df,df->d", g, self.w[hi]) * self.scale
            seasonal = seasonal_forecast(recent, self.lags, h, spans)
            both = np.stack([y, ridge, level, seasonal], axis=1)
            e = self.err[hi]
            best = np.argmin(e[:, 1:], axis=1) + 1  # persistence unless clearly beaten
            k = np.where(e[rows, best] < (1.0 - SWITCH_MARGIN) * e[:, 0], best, 0)
            if self.seen[hi] < 30:
                k = np.zeros(self.d, np.int64)
            k = np.where(stale, 0, k)
            sel = both[rows, k]
            # a seasonal forecast's band from the device's last few periods (models.py)
            last = np.where(k == SEASONAL, band_window(self.lags, h), self.win.shape[2])
            margin = self._margin(hi, last) * np.where(stale, 2.0, 1.0)
            self.pending[hi].append((self.t + h, both, sel, margin))
            means[h], uppers[h], models[h] = sel, sel + margin, k
        return means, uppers, models

    def _rls(self, hi: int, f: Floats, target: Floats) -> None:
        p = self.p[hi]
        pf = np.einsum("dij,dj->di", p, f)
        k = pf / (self.lam + np.einsum("di,di->d", f, pf))[:, None]
        self.w[hi] += k * (target - np.einsum("di,di->d", f, self.w[hi]))[:, None]
        p = (p - k[:, :, None] * pf[:, None, :]) / self.lam
        tr = np.trace(p, axis1=1, axis2=2)  # bounded by the prior, as in OnlineRidge
        self.p[hi] = p * np.where(tr > self.p_max_trace, self.p_max_trace / tr, 1.0)[:, None, None]

    def _margin(self, hi: int, last: NDArray[np.int64]) -> Floats:
        """Each device's margin (W) from its newest `last` errors (all held, if fewer), and
        never below the quantile of its newest BAND_MIN (as `ConformalBound.margin`)."""
        size = self.win.shape[2]
        n_all = min(int(self.win_n[hi]), size)
        if n_all < 10:
            return np.full(self.d, np.inf)
        level = np.clip(1.0 - self.alpha[hi], 0.0, 1.0)
        n = np.minimum(last, n_all)
        if np.all(n == n_all):
            data = np.sort(self.win[hi, :, :n_all], axis=1)
        else:  # the newest n of each row; the older ones pushed past the end as +inf
            age = (self.win_n[hi] - 1 - np.arange(size)) % size  # of each slot, 0 = newest
            data = np.sort(np.where(age[None, :] < n[:, None], self.win[hi], np.inf), axis=1)
        m = min(BAND_MIN, n_all)
        newest = (self.win_n[hi] - 1 - np.arange(m)) % size
        recent = np.sort(self.win[hi][:, newest], axis=1)
        return np.maximum(0.0, np.maximum(sorted_quantile(data, level, n),
                                          sorted_quantile(recent, level, m)))
