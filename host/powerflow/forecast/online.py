"""The online forecaster of one device: models, selector and P95 bounds run together.

`step(y, x)` takes the period's observation, scores the forecasts whose target it is,
learns, and returns the new forecasts: per horizon, the selected model's mean and its
upper bound. `stale=True` (telemetry missing) forecasts from history alone and widens
the band.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from powerflow.forecast.models import (ConformalBound, History, OnlineRidge, Persistence,
                                       RollingMean, Seasonal, Selector, band_window)


@dataclass
class Forecast:
    mean: dict[int, float]  # horizon (periods) -> W
    upper: dict[int, float]  # horizon -> W at the bound's quantile
    model: dict[int, str] = field(default_factory=dict)


class OnlineForecaster:
    def __init__(self, horizons: tuple[int, ...], n_exog: int = 0, q: float = 0.95) -> None:
        self.horizons = tuple(sorted(horizons))
        self.hist = History(n_exog)
        self.models: list[Any] = [Persistence(self.horizons, n_exog), OnlineRidge(self.horizons, n_exog),
                       RollingMean(self.horizons, n_exog), Seasonal(self.horizons, n_exog)]
        self.names = [m.name for m in self.models] + ["selected"]
        self.selector = Selector(self.models, self.horizons)
        self.bounds = {(n, h): ConformalBound(q) for n in self.names for h in self.horizons}
        # forecasts waiting for their target: per horizon, (per-name mean, per-name margin)
        self.pending: dict[int, deque] = {h: deque() for h in self.horizons}
        self.t = 0
        self.scored: list[tuple[int, str, float, float, float]] = []  # (h, name, y, mean, margin)
        self.keep_scores = False

    def step(self, y: float, x: np.ndarray | None = None, stale: bool = False) -> Forecast:
        x = np.zeros(self.hist.n_exog) if x is None else np.asarray(x, float)
        self.t += 1
        # score the forecasts made h periods ago
        for h in self.horizons:
            q = self.pending[h]
            while q and q[0][0] <= self.t:
                _, means, margins = q.popleft()
                errs = np.array([abs(y - means[m.name]) for m in self.models])
                self.selector.score(h, errs)
                for n in self.names:
                    self.bounds[(n, h)].update(y - means[n], margins[n])
                    if self.keep_scores:
                        self.scored.append((h, n, y, means[n], margins[n]))
        self.hist.add(y, x)
        for m in self.models:
            m.observe(y, x, self.hist)
        preds = [m.predict(self.hist) for m in self.models]
        out = Forecast({}, {}, {})
        widen = 2.0 if stale else 1.0
        for h in self.horizons:
            means = {m.name: p[h] for m, p in zip(self.models, preds, strict=True)}
            k = 0 if stale else self.selector.choose(h)  # stale: fall back to history
            means["selected"] = preds[k][h]
            margins = {n: self.bounds[(n, h)].margin(widen) for n in self.names}
            if self.models[k].name == "seasonal":  # its band from its last few periods
                last = int(band_window(int(self.models[k].lag[0]), h))
                margins["selected"] = self.bounds[("selected", h)].margin(widen, last)
            self.pending[h].append((self.t + h, means, margins))
            out.mean[h] = means["selected"]
            out.upper[h] = means["selected"] + margins["selected"]
            out.model[h] = self.models[k].name
        return out
