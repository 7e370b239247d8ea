"""The forecasters on structured workloads: MAE per horizon and model on the demand of the
shipped scenarios' jobs (training-jobs, inference-day), strictly online, by workload kind.
The demand is what the scenario's jobs ask each period (the mean over the period, W), as the
rack physics computes it; each device gets its own online forecaster, as the controller runs
them. Then the P95 bound of the selected forecast: its coverage and mean margin (W), against
the same forecaster with every bound taken over the whole 300-error window (the reference,
in the same process: before a seasonal forecast's band came from its last few periods).
In-process.

    .venv/bin/python bench/bench_structured_forecast.py
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from powerflow.emulator.physics import RackPhysics
from powerflow.forecast import models
from powerflow.emulator.workloads import Workload
from powerflow.forecast.evaluate import evaluate
from powerflow.scenario.spec import Scenario, load_scenario

ROOT = Path(__file__).resolve().parents[1]
HORIZONS = (1, 10, 60)
MODELS = ("persistence", "ridge", "mean", "seasonal", "selected")


def demand(sc: Scenario, samples: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Per period and device: the mean demand (W) and utilisation over the period."""
    ph = RackPhysics(sc.rack, sc.seed)
    ph.trace_speed = sc.trace_speed
    ph.workload = Workload(len(sc.rack.devices), sc.jobs, sc.seed)
    pmin = np.array([d.p_min_w for d in sc.rack.devices])
    pmax = np.array([d.p_max_w for d in sc.rack.devices])
    n = int(sc.duration_s / sc.period_s)
    y, u = np.zeros((n, len(pmin))), np.zeros((n, len(pmin)))
    for p in range(n):
        us = np.array([ph.utilisations((p + (k + 0.5) / samples) * sc.period_s)
                       for k in range(samples)])
        u[p] = us.mean(axis=0)
        y[p] = np.minimum((pmin + us * (pmax - pmin)) * sc.load_scale, pmax).mean(axis=0)
    return y, u


def main() -> None:
    print("| scenario | workload | devices | horizon | " + " | ".join(MODELS)
          + " | selected vs persistence |")
    print("|---|---|---|---|" + "---|" * len(MODELS) + "---|")
    bounds: dict[str, tuple[np.ndarray, np.ndarray, dict[str, list[int]]]] = {}
    for name in ("training-jobs", "inference-day"):
        sc = load_scenario(ROOT / "examples" / "scenarios" / f"{name}.toml")
        t0 = time.perf_counter()
        y, u = demand(sc)
        groups: dict[str, list[int]] = {}
        for j in sc.jobs:
            groups.setdefault(j.kind, []).extend(j.devices)
        groups["all"] = sorted(k for g in groups.values() for k in g)
        mae: dict[tuple[int, int, str], float] = {}
        for k in groups["all"]:
            r = evaluate(y[:, k], u[:, k:k + 1], HORIZONS)
            for h in HORIZONS:
                for m in MODELS:
                    mae[(k, h, m)] = r[str(h)][m]["mae"]
        for g, devs in groups.items():
            for h in HORIZONS:
                row = [float(np.mean([mae[(k, h, m)] for k in devs])) for m in MODELS]
                gain = 100 * (1 - row[-1] / row[0]) if row[0] else 0.0
                print(f"| {name} | {g} | {len(devs)} | {h} s | "
                      + " | ".join(f"{v:.1f}" for v in row) + f" | {gain:+.0f} % |")
        print(f"<!-- {name}: {time.perf_counter() - t0:.1f} s -->")
        bounds[name] = (y, u, groups)
    print()
    print("| scenario | workload | horizon | P95 coverage | P95 margin W | reference: coverage | "
          "margin W |")
    print("|---|---|---|---|---|---|---|")
    for name, (y, u, groups) in bounds.items():
        res = {}
        for ref in (False, True):
            kept = models.BAND_MIN
            models.BAND_MIN = models.BAND_WINDOW if ref else kept  # the whole window
            try:
                for k in groups["all"]:
                    r = evaluate(y[:, k], u[:, k:k + 1], HORIZONS)
                    for h in HORIZONS:
                        sel = r[str(h)]["selected"]
                        res[(ref, k, h)] = (sel["p95_coverage"], sel["p95_margin"])
            finally:
                models.BAND_MIN = kept
        for g, devs in groups.items():
            for h in HORIZONS:
                now = np.mean([res[(False, k, h)] for k in devs], axis=0)
                ref_ = np.mean([res[(True, k, h)] for k in devs], axis=0)
                print(f"| {name} | {g} | {h} s | {now[0]:.3f} | {now[1]:.1f} | {ref_[0]:.3f} | "
                      f"{ref_[1]:.1f} |")


if __name__ == "__main__":
    main()
