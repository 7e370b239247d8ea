"""Where the forecaster's error on synchronous training lies: each 60-s forecast of the
training GPUs of training-jobs classed by where its origin and its target fall against the
jobs' own pause list (`Workload.training_pauses`), and each class's share of the MAE (W),
for persistence, the seasonal model and the selected forecast. The demand is what the jobs
ask each period (the mean over the period, W), as bench_structured_forecast.py computes it;
each device its own online forecaster, strictly online. In-process.

Classes: a target in a pause; a target before a job's first step or after its end (or an
origin there); an origin in a pause with the target in the steps after it; a pause between
origin and target; origin and target in one run of steps, the origin within 20 s of the
run's start (a return or the first step) or later.

    .venv/bin/python bench/bench_forecast_attribution.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench_structured_forecast import demand
from powerflow.emulator.workloads import Workload
from powerflow.forecast.online import OnlineForecaster
from powerflow.scenario.spec import load_scenario

ROOT = Path(__file__).resolve().parents[1]
H = 60  # periods (1 s each on training-jobs)
MODELS = ("persistence", "seasonal", "selected")
WARMUP = 60  # periods of targets left out, as `forecast eval` leaves its first ones
RECENT_S = 20.0  # an origin this soon after its run began is "just back"


def classify(pauses: list[tuple[float, float, float]], first: float, end: float,
             origin: int, target: int) -> str:
    """The class of a forecast made in period `origin` for period `target` (see above)."""
    def state(p: int) -> str:
        t = p + 0.5
        if t < first or t >= end:
            return "off"
        return "pause" if any(a <= t < b for a, b, _ in pauses) else "run"

    so, st = state(origin), state(target)
    if st == "pause":
        return "target in a pause"
    if "off" in (so, st):
        return "job start or end"
    if so == "pause":
        return "origin in a pause, target after"
    if any(origin + 0.5 < a and b <= target + 0.5 for a, b, _ in pauses):
        return "a pause between"
    began = max([b for _, b, _ in pauses if b <= origin + 0.5] + [first])
    return ("one run, origin just back" if origin + 0.5 - began < RECENT_S
            else "one run")


def main() -> None:
    sc = load_scenario(ROOT / "examples" / "scenarios" / "training-jobs.toml")
    y, u = demand(sc)
    errs: dict[tuple[str, str], list[float]] = {}
    for j in sc.jobs:
        if j.kind != "training":
            continue
        pauses = Workload.training_pauses(j, sc.duration_s)
        first = j.p("start_s") + j.p("init_s")
        end = j.p("start_s") + j.p("duration_s")
        for k in j.devices:
            fc = OnlineForecaster((1, 10, H), 1)
            fc.keep_scores = True
            for i in range(len(y)):
                fc.step(float(y[i, k]), u[i, k:k + 1])
            for name in MODELS:
                scored = [(v, m) for h, n, v, m, _ in fc.scored if h == H and n == name]
                for idx, (v, m) in enumerate(scored):  # the first scored target is period H
                    target = idx + H
                    if target < WARMUP + H:
                        continue
                    c = classify(pauses, first, end, target - H, target)
                    errs.setdefault((name, c), []).append(abs(v - m))
    classes = sorted({c for _, c in errs})
    n = sum(len(errs[(MODELS[0], c)]) for c in classes)
    print(f"training-jobs, training GPUs, {H}-s forecasts: share of the MAE (W) by class")
    print("\n| class | forecasts | " + " | ".join(MODELS) + " |")
    print("|---|---|" + "---|" * len(MODELS))
    for c in classes:
        print(f"| {c} | {len(errs[(MODELS[0], c)])} | " + " | ".join(
            f"{np.sum(errs[(m, c)]) / n:.2f}" for m in MODELS) + " |")
    print("| all | " + str(n) + " | " + " | ".join(
        f"{sum(np.sum(errs[(m, c)]) for c in classes) / n:.2f}" for m in MODELS) + " |")


if __name__ == "__main__":
    main()
