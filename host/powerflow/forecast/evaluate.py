"""Strictly online evaluation of the forecasters on a recorded trace (`powerflow forecast eval`).

The trace is a CSV file: a time column (Unix seconds), a value column (W) and optional
exogenous columns, resampled to a fixed period by averaging. Each period the forecaster
sees that period's row and nothing later; every forecast is scored when its target
arrives. Reported per horizon and model: MAE, MASE (MAE over the trace's mean absolute
one-period change), P95 coverage and the mean P95 margin.
"""

from __future__ import annotations

import csv
import gzip
import math
from pathlib import Path
from typing import Any

import numpy as np

from powerflow.forecast.online import OnlineForecaster
from powerflow.tomlfile import not_text


class TraceError(ValueError):
    """A trace that cannot be evaluated; the message names the file and the problem."""


def read_trace(path: str | Path, time_col: str, value_col: str, exog: list[str],
               period_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(values, exogenous matrix) resampled to `period_s` by averaging; gaps carried forward."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rt", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as e:
        raise TraceError(f"{p}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise TraceError(not_text(p, e)) from None
    except csv.Error as e:
        raise TraceError(f"{p}: not CSV: {e}") from None
    if not rows:
        raise TraceError(f"{p}: no rows")
    missing = [c for c in [time_col, value_col, *exog] if c not in rows[0]]
    if missing:
        raise TraceError(f"{p}: no column {missing[0]!r}; columns: {', '.join(rows[0])}")
    try:
        t = np.array([float(r[time_col]) for r in rows])
        v = np.array([float(r[value_col]) for r in rows])
        x = np.array([[float(r[c]) for c in exog] for r in rows]).reshape(len(rows), len(exog))
    except ValueError as e:
        raise TraceError(f"{p}: not a number: {e}") from None
    order = np.argsort(t, kind="stable")
    t, v, x = t[order], v[order], x[order]
    bins = np.floor((t - t[0]) / period_s).astype(np.int64)
    n = int(bins[-1]) + 1
    count = np.bincount(bins, minlength=n)
    vs = np.bincount(bins, weights=v, minlength=n)
    xs = np.stack([np.bincount(bins, weights=x[:, j], minlength=n) for j in range(len(exog))],
                  axis=1) if exog else np.zeros((n, 0))
    out_v = np.empty(n)
    out_x = np.empty((n, len(exog)))
    last_v, last_x = v[0], x[0]
    for i in range(n):
        if count[i]:
            last_v, last_x = vs[i] / count[i], xs[i] / count[i]
        out_v[i], out_x[i] = last_v, last_x
    return out_v, out_x


def evaluate(values: np.ndarray, exog: np.ndarray, horizons: tuple[int, ...], q: float = 0.95,
             warmup: int = 60) -> dict[str, dict[str, dict[str, float]]]:
    """{horizon: {model: {mae, mase, p95_coverage, p95_margin}}} over the trace after `warmup`."""
    fc = OnlineForecaster(horizons, exog.shape[1], q)
    fc.keep_scores = True
    for i in range(len(values)):
        fc.step(float(values[i]), exog[i])
    scale = float(np.mean(np.abs(np.diff(values)))) or 1.0
    out: dict[str, dict[str, dict[str, float]]] = {}
    for h in horizons:
        per: dict[str, dict[str, float]] = {}
        for name in fc.names:
            rows = [(y, m, g) for hh, n, y, m, g in fc.scored[warmup:] if hh == h and n == name]
            rows = [r for r in rows if math.isfinite(r[2])]
            if not rows:
                continue
            y, m, g = (np.array(c) for c in zip(*rows, strict=True))
            mae = float(np.mean(np.abs(y - m)))
            per[name] = {"mae": mae, "mase": mae / scale,
                         "p95_coverage": float(np.mean(y <= m + g)),
                         "p95_margin": float(np.mean(g)), "n": float(len(y))}
        out[str(h)] = per
    return out


def evaluate_file(path: str, time_col: str, value_col: str, exog: list[str], period_s: float,
                  horizons: tuple[int, ...]) -> dict[str, Any]:
    v, x = read_trace(path, time_col, value_col, exog, period_s)
    if len(v) < max(horizons) + 100:
        raise TraceError(f"{path}: {len(v)} periods after resampling: too short for horizon "
                         f"{max(horizons)}")
    return {"trace": str(path), "periods": len(v), "period_s": period_s,
            "horizons": evaluate(v, x, horizons)}
