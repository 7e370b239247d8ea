"""Online demand forecasters for one device: pure computation, one observation at a time.

Every model sees the series only up to now: `observe(y, x)` adds the value y (W) and the
exogenous inputs x (e.g. GPU/CPU utilisation, %) of the current period, and
`predict()` returns the forecast for each horizon (periods ahead). Learning uses only
pairs whose target has been observed, so an evaluation that interleaves predict and
observe is strictly online.

- `Persistence`: y(t+h) = y(t).
- `OnlineRidge`: recursive least squares (with forgetting and a ridge prior) on features of
  the recent past, predicting the change from persistence for each horizon separately.
- `RollingMean`: y(t+h) = the mean of the recent window.
- `Seasonal`: the series' own period, found by its autocorrelation (a synchronous training
  job's step, a checkpoint cycle): y(t+h) = the mean of the values whole periods before t+h.
- `Selector`: per horizon, the model whose recent absolute error (exponentially weighted) is
  lowest, persistence unless another is clearly better: so never much worse than persistence.
- `ConformalBound`: an upper quantile (P95 by default) around any model's forecast, from its
  recent errors, with the adaptive-conformal correction of Gibbs & Candes (2021) keeping the
  long-run coverage at the target. Where the selected model is the seasonal one, the
  quantile is taken over the device's newest `band_window(lag, h)` errors only (its last
  BAND_PERIODS periods or BAND_HORIZONS horizons, at least BAND_MIN): a periodic device's
  forecast is near exact within a regime, and its large errors come at regime changes (a
  checkpoint, an evaluation pause, a job's start); over the whole window those few set the
  bound for minutes after them, holding back supply the rack could use (measured on
  training-jobs, bench/RESULTS.md).
"""

from __future__ import annotations

from collections import deque

import numpy as np
from numpy.typing import NDArray
from powerflow.forecast.runs import RunSpans, StepRuns
from powerflow.model.arrays import Floats

LAGS = (1, 2, 5, 10, 30, 60)
WINDOWS = (10, 60, 300)
SWITCH_MARGIN = 0.03  # another model is selected over persistence only when this much better
SELECT_HORIZON_SCALE = 10  # the selector's memory grows with the horizon beyond this (periods)
SEASON_WINDOW = 360  # periods of history the period is found in
SEASON_MAX_LAG = 120  # the longest period looked for (periods): a third of the window
SEASON_MIN_R = 0.3  # autocorrelation at the period below which there is no period
SEASON_EVERY = 20  # periods between searches for the period
SEASON_CYCLES = 3  # whole periods averaged in a seasonal forecast
SEASON_MIN_HISTORY = 60  # periods seen before the first search
BAND_WINDOW = 300  # errors a bound's quantile is taken over
BAND_PERIODS = 3  # ... a seasonal forecast's: over this many of the device's own periods ...
BAND_HORIZONS = 6  # ... and of the horizon (errors less than a horizon apart share a cause)
BAND_MIN = 30  # ... and at least this many errors


def band_window(lag: NDArray[np.int64] | int, h: int) -> NDArray[np.int64]:
    """Errors a seasonal forecast's bound at horizon `h` (periods) is taken over, for a device
    of period `lag`: BAND_PERIODS of its periods, BAND_HORIZONS horizons, at least BAND_MIN,
    at most the whole window."""
    span = np.maximum(BAND_PERIODS * np.asarray(lag, np.int64), BAND_HORIZONS * h)
    return np.clip(span, BAND_MIN, BAND_WINDOW)


class History:
    """The recent past of one series and its exogenous inputs (periods, newest last)."""

    def __init__(self, n_exog: int, keep: int = 600) -> None:
        self.y: deque[float] = deque(maxlen=keep)
        self.x: deque[Floats] = deque(maxlen=keep)
        self.n_exog = n_exog
        self._features: Floats | None = None  # of the newest observation, computed once

    def add(self, y: float, x: Floats) -> None:
        self.y.append(float(y))
        self.x.append(np.asarray(x, float))
        self._features = None

    def features(self) -> Floats:
        """Level, changes over the lags, distance to rolling means, exogenous level and change
        (a copy: callers keep it while new observations arrive)."""
        if self._features is None:
            self._features = self._compute()
        return self._features.copy()

    def _compute(self) -> Floats:
        ys = self.y
        y = ys[-1]
        out = [1.0, y]  # the level: where it stands against what the inputs call for
        for k in LAGS:
            out.append(y - ys[-1 - k] if len(ys) > k else 0.0)
        arr = np.fromiter(ys, float)
        for w in WINDOWS:
            out.append(float(arr[-w:].mean()) - y)
        out.append(float(arr[-60:].std()) if len(arr) > 1 else 0.0)
        if self.n_exog:
            x = self.x[-1]
            out.extend(x.tolist())
            for k in LAGS:  # how the inputs moved: their recent past leads the load
                out.extend((x - self.x[-1 - k] if len(self.x) > k else np.zeros_like(x)).tolist())
        return np.array(out)


class Persistence:
    name = "persistence"

    def __init__(self, horizons: tuple[int, ...], n_exog: int = 0) -> None:
        self.horizons = horizons
        self.last = 0.0

    def observe(self, y: float, x: Floats, hist: History) -> None:
        self.last = y

    def predict(self, hist: History) -> dict[int, float]:
        return {h: self.last for h in self.horizons}


class RollingMean:
    """y(t+h) = the mean of the last `window` values: at long horizons a series that switches
    between phases is better met at its recent level than at its last value."""

    name = "mean"

    def __init__(self, horizons: tuple[int, ...], n_exog: int = 0, window: int = 120) -> None:
        self.horizons = horizons
        self.window = window
        self.level = 0.0

    def observe(self, y: float, x: Floats, hist: History) -> None:
        ys = hist.y
        n = min(len(ys), self.window)
        self.level = float(np.fromiter((ys[-1 - k] for k in range(n)), float).mean())

    def predict(self, hist: History) -> dict[int, float]:
        return {h: self.level for h in self.horizons}


def season_lags(arr: Floats) -> NDArray[np.int64]:
    """Per row of `arr` (devices x periods, oldest first), the period (periods) of the series:
    the lag of the highest local peak of the autocorrelation of its changes (biased estimator,
    so a period's multiples score lower than the period itself), 0 where no peak reaches
    SEASON_MIN_R or the series is flat. Changes, not levels: a job starting in the window is
    one spike among them, where in the levels it is a step whose slowly decaying correlation
    lifts the shortest lags above the true period. Rows are independent: one device alone
    gets the answer it gets in a batch."""
    dx = np.diff(arr, axis=1)
    x = dx - dx.mean(axis=1, keepdims=True)
    w = x.shape[1]
    # zero-padded past every lag read, so no lag wraps round onto a negative one
    n = 1 << (w + SEASON_MAX_LAG + 2).bit_length()
    f = np.fft.rfft(x, n, axis=1)
    ac = np.fft.irfft(f * np.conj(f), n, axis=1)[:, :SEASON_MAX_LAG + 2]
    var = ac[:, 0]
    r = ac / np.maximum(var, 1e-12)[:, None]
    mid = r[:, 2:-1]  # lags 2 .. SEASON_MAX_LAG
    lags = np.arange(2, SEASON_MAX_LAG + 1)
    peak = ((mid >= r[:, 1:-2]) & (mid >= r[:, 3:]) & (mid >= SEASON_MIN_R)
            & (lags <= w // 3)[None, :])  # a period seen at least three times
    score = np.where(peak, mid, -np.inf)
    best = np.argmax(score, axis=1)
    ok = np.isfinite(score[np.arange(len(x)), best]) & (var > 1e-9 * w)
    return np.where(ok, best + 2, 0).astype(np.int64)


def seasonal_forecast(arr: Floats, lags: NDArray[np.int64], h: int,
                      spans: RunSpans | None = None) -> Floats:
    """y(t+h) per row: the mean of the values SEASON_CYCLES whole periods before t+h (the
    newest that are already known); the last value where there is no period or history.

    With `spans` (forecast/runs.py), a device's values are read from its current run of
    steps only, since its steps started afresh when the run began: where the run is younger
    than the target's phase, from the run before it at the same phase counted from that
    run's start; where neither holds one, as without `spans`."""
    d, n = arr.shape
    rows = np.arange(d)[:, None]
    lag = np.maximum(lags, 1)
    m0 = -(-h // lag)  # the fewest whole periods reaching back past now
    backs = (m0[:, None] + np.arange(SEASON_CYCLES)[None, :]) * lag[:, None] - h
    ok = (backs < n) & (lags[:, None] > 0)
    idx = n - 1 - backs
    if spans is not None:
        run = np.where(spans.run > 0, np.minimum(spans.run, n), n)
        start = n - run  # index the current run began at
        in_run = ok & (idx >= start[:, None])
        # the run before: [ps, pe), read at the target's phase counted from each run's start
        pe = start - spans.gap
        ps = np.maximum(pe - spans.prev, 0)
        phase = (h + run - 1) % lag
        top = (pe - 1 - ps - phase) // lag  # the newest whole period of that phase in it
        back = top[:, None] - np.arange(SEASON_CYCLES)  # whole periods from ps + phase
        before = ps[:, None] + phase[:, None] + back * lag[:, None]
        in_prev = ((lags[:, None] > 0) & (spans.run[:, None] > 0) & (spans.prev[:, None] > 0)
                   & (back >= 0) & (before >= ps[:, None])
                   & (before < pe[:, None]) & (before >= 0))
        use_run = in_run.any(axis=1)
        use_prev = ~use_run & in_prev.any(axis=1)
        idx = np.where(use_run[:, None], idx, np.where(use_prev[:, None], before, idx))
        ok = np.where(use_run[:, None], in_run, np.where(use_prev[:, None], in_prev, ok))
    vals = arr[rows, np.where(ok, idx, n - 1)]
    cnt = ok.sum(axis=1)
    return np.where(cnt > 0, (vals * ok).sum(axis=1) / np.maximum(cnt, 1), arr[:, -1])


class Seasonal:
    """y(t+h) from the series' own period, read in its current run of steps (see
    `season_lags`, `seasonal_forecast`, forecast/runs.py)."""

    name = "seasonal"

    def __init__(self, horizons: tuple[int, ...], n_exog: int = 0) -> None:
        self.horizons = horizons
        self.lag = np.zeros(1, np.int64)
        self.seen = 0
        self.runs = StepRuns(1)

    def observe(self, y: float, x: Floats, hist: History) -> None:
        self.seen += 1
        self.runs.update(np.array([y]))
        if self.seen % SEASON_EVERY == 0 and len(hist.y) >= SEASON_MIN_HISTORY:
            ys = list(hist.y)[-SEASON_WINDOW:]
            self.lag = season_lags(np.array([ys]))

    def predict(self, hist: History) -> dict[int, float]:
        arr = np.array([list(hist.y)[-SEASON_WINDOW:]])
        spans = self.runs.spans()
        return {h: float(seasonal_forecast(arr, self.lag, h, spans)[0]) for h in self.horizons}


class OnlineRidge:
    """Per horizon h: RLS on features(t - h) -> y(t) - y(t - h), forgetting factor `lam`."""

    name = "ridge"

    def __init__(self, horizons: tuple[int, ...], n_exog: int = 0, lam: float = 0.99,
                 prior: float = 0.01) -> None:
        self.horizons = horizons
        self.lam = lam
        self.n = 2 + len(LAGS) + len(WINDOWS) + 1 + (1 + len(LAGS)) * n_exog
        self.w = {h: np.zeros(self.n) for h in horizons}
        self.p = {h: np.eye(self.n) * prior for h in horizons}
        self.p_max_trace = self.n * prior * 1e4
        self.pending: deque[tuple[Floats, float]] = deque(maxlen=max(horizons) + 1)
        self.scale = 1.0  # the series' typical size: features and targets in its units

    def _scaled(self, f: Floats) -> Floats:
        g = f / self.scale
        g[0] = 1.0
        return g

    def observe(self, y: float, x: Floats, hist: History) -> None:
        f_now = hist.features()
        if len(hist.y) <= 50:  # fixed once known, so that learnt weights keep their meaning
            self.scale = max(1.0, float(np.mean(np.abs(np.fromiter(hist.y, float)))))
        # learn from every horizon whose target is now known
        for h in self.horizons:
            if len(self.pending) >= h:
                f, y0 = self.pending[-h]
                self._rls(h, self._scaled(f), (y - y0) / self.scale)
        self.pending.append((f_now, y))

    def _rls(self, h: int, f: Floats, target: float) -> None:
        p = self.p[h]
        pf = p @ f
        k = pf / (self.lam + f @ pf)
        self.w[h] += k * (target - f @ self.w[h])
        p = (p - np.outer(k, pf)) / self.lam
        # forgetting inflates P along directions the data no longer excites (a constant input):
        # bounded by its prior, the estimate cannot wind up and explode
        tr = float(np.trace(p))
        self.p[h] = p * (self.p_max_trace / tr) if tr > self.p_max_trace else p

    def predict(self, hist: History) -> dict[int, float]:
        f = self._scaled(hist.features())
        y = hist.y[-1]
        return {h: y + float(f @ self.w[h]) * self.scale for h in self.horizons}


def selector_decay(halflife: float, h: int) -> float:
    """The selector's per-period decay of its error record at horizon `h`: errors h periods
    ahead are correlated over about h periods, so the record of a long horizon holds few
    independent errors in a fixed half-life; it is stretched in proportion beyond
    SELECT_HORIZON_SCALE, lest the selector switch on what is noise at that horizon."""
    return 0.5 ** (1.0 / (halflife * max(1.0, h / SELECT_HORIZON_SCALE)))


class Selector:
    """Per horizon, the forecast of the model with the lowest recent absolute error."""

    name = "selected"

    def __init__(self, models: list, horizons: tuple[int, ...], halflife: float = 120.0) -> None:
        self.models = models
        self.horizons = horizons
        self.decay = {h: selector_decay(halflife, h) for h in horizons}
        self.err = {h: np.zeros(len(models)) for h in horizons}
        self.seen = {h: 0 for h in horizons}

    def score(self, h: int, errors: Floats) -> None:
        """Record the absolute errors the models made for horizon h (as targets arrive)."""
        self.err[h] = self.decay[h] * self.err[h] + (1 - self.decay[h]) * errors
        self.seen[h] += 1

    def choose(self, h: int) -> int:
        """Persistence (model 0) unless another's recent error is clearly lower: switching
        on noise would make the selector worse than persistence, never better."""
        if self.seen[h] < 30:
            return 0  # persistence until the others have a record
        e = self.err[h]
        k = int(np.argmin(e[1:])) + 1
        return k if e[k] < (1.0 - SWITCH_MARGIN) * e[0] else 0


class ConformalBound:
    """Upper bound at quantile `q` from recent signed errors (y - forecast), with the
    adaptive-conformal update of the working quantile keeping coverage at `q`."""

    def __init__(self, q: float = 0.95, window: int = BAND_WINDOW, gamma: float = 0.005) -> None:
        self.q = q
        self.alpha = 1.0 - q  # working miscoverage
        self.window: deque[float] = deque(maxlen=window)
        self.gamma = gamma

    def margin(self, widen: float = 1.0, last: int | None = None) -> float:
        """The margin above the forecast (W); `last`: from the newest `last` errors only. Never
        below the quantile of the newest BAND_MIN errors: a change of regime (a job starting
        on a device that idled, its steps' edges) shows first there, and a band over a window
        of calm errors would not see it for minutes — the feed-limit violations the
        forecaster left on training-jobs (bench/RESULTS.md). The adaptive level keeps the
        long-run coverage at the target whichever estimate binds."""
        if len(self.window) < 10:
            return float("inf")
        level = min(1.0, max(0.0, 1.0 - self.alpha))
        errs = np.fromiter(self.window, float)
        q = float(np.quantile(errs if last is None else errs[-last:], level))
        return max(0.0, q, float(np.quantile(errs[-BAND_MIN:], level))) * widen

    def update(self, residual: float, margin: float) -> None:
        miss = 1.0 if residual > margin else 0.0
        self.alpha += self.gamma * ((1.0 - self.q) - miss)
        self.window.append(residual)
