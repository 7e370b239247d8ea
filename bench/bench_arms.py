"""What prediction buys: every shipped scenario under the four arms (the allocator fed by the
forecaster, by persistence, by perfect foresight, by the forecaster with the scenario's job
hints as a scheduler sends them), the same rack, seed and events; per arm unmet energy (Wh),
brownouts, feed-limit violations, the feed's ramp rate (p99, W/s), converter switchings,
battery throughput and losses (Wh); prediction_value and hint_value (the share of the
reactive-to-oracle gap the predictive and the hinted arm close). Then a diagnostic on
training-jobs: the predictive arm with the forecaster shown each device's demand instead of
what it was served (what caps hide from it). In-process, fast mode.

    .venv/bin/python -u bench/bench_arms.py
    .venv/bin/python -u bench/bench_arms.py --seeds 1,2,3,4,5   # the structured scenarios
                                                                # over seeds, averaged
    .venv/bin/python -u bench/bench_arms.py --seeds 1,2,3,4,5 --scenario inference-day
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from powerflow.scenario.arms import ARMS
from powerflow.scenario.pool import RunSpec, run_one
from powerflow.scenario.runner import VALUE_OUTCOMES, arm_outcomes, gap_closed, run_arms
from powerflow.scenario.spec import load_scenario

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    print("| scenario | arm | unmet Wh | brownouts | feed violations | feed ramp p99 W/s | "
          "switchings | battery Wh | loss Wh |")
    print("|---|---|---|---|---|---|---|---|---|")
    values = []
    for f in sorted((ROOT / "examples" / "scenarios").glob("*.toml")):
        sc = load_scenario(f)
        t = time.perf_counter()
        out = run_arms(sc, ARMS)
        for arm, a in out["arms"].items():
            print(f"| {f.stem} | {arm} | {a['capped_wh']:.2f} | {a['brownouts']} | "
                  f"{a['feed_limit_violations']} | {a['feed_ramp_p99_w_per_s']:.0f} | "
                  f"{a['converter_switchings']} | {a['battery_throughput_wh']:.2f} | "
                  f"{a['loss_wh']:.2f} |", flush=True)
        values.append((f.stem, out["prediction_value"], out.get("hint_value", {}),
                       time.perf_counter() - t))
    print("\n| scenario | value of | unmet energy | feed violations | brownouts | loss | time |")
    print("|---|---|---|---|---|---|---|")
    for name, v, hv, el in values:
        for what, val in (("prediction", v), ("hints", hv)):
            cell = ["—" if val.get(k) is None else f"{val[k]:.2f}" for k in VALUE_OUTCOMES]
            print(f"| {name} | {what} | " + " | ".join(cell) + f" | {el:.0f} s |")
    sc = load_scenario(ROOT / "examples" / "scenarios" / "training-jobs.toml")
    a = arm_outcomes(run_one(RunSpec(sc, "controlled", "predictive", observe_demand=True)), sc)
    print(f"\ntraining-jobs, predictive, the forecaster shown demand instead of served power: "
          f"unmet {a['capped_wh']:.2f} Wh, feed violations {a['feed_limit_violations']}, "
          f"loss {a['loss_wh']:.2f} Wh")


STRUCTURED = ("training-jobs", "inference-day")


def over_seeds(seeds: list[int], names: tuple[str, ...] = STRUCTURED) -> None:
    """The structured scenarios with each seed (its workloads' random draws: batch arrivals,
    bursts, phases), every arm; per arm the mean over seeds (and the range), and the share
    of the gap closed computed on the means: one seed's counts of a few violations are
    noise."""
    print(f"\nseeds {seeds}\n")
    print("| scenario | arm | unmet Wh mean (range) | feed violations mean (range) | "
          "brownouts mean | loss Wh mean |")
    print("|---|---|---|---|---|---|")
    values = []
    for name in names:
        sc0 = load_scenario(ROOT / "examples" / "scenarios" / f"{name}.toml")
        runs = [run_arms(dataclasses.replace(sc0, seed=s), ARMS)["arms"] for s in seeds]
        mean = {arm: {k: float(np.mean([r[arm][k] for r in runs])) for k in VALUE_OUTCOMES}
                for arm in ARMS}
        for arm in ARMS:
            u = [r[arm]["capped_wh"] for r in runs]
            v = [r[arm]["feed_limit_violations"] for r in runs]
            print(f"| {name} | {arm} | {np.mean(u):.2f} ({min(u):.2f}–{max(u):.2f}) | "
                  f"{np.mean(v):.1f} ({min(v)}–{max(v)}) | {mean[arm]['brownouts']:.1f} | "
                  f"{mean[arm]['loss_wh']:.2f} |", flush=True)
        for arm, what in (("predictive", "prediction"), ("hinted", "hints")):
            val = gap_closed(mean, arm)
            values.append(f"| {name} | {what} | " + " | ".join(
                "—" if val[k] is None else f"{val[k]:.2f}" for k in VALUE_OUTCOMES) + " |")
    print("\n| scenario | value of (on the means) | unmet energy | feed violations | brownouts "
          "| loss |")
    print("|---|---|---|---|---|---|")
    print("\n".join(values))


def _seeds(text: str) -> list[int]:
    """--seeds: comma-separated integers from 0 to 2**31 - 1, as a scenario's seed."""
    try:
        seeds = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers; got {text!r}")
    if not all(0 <= x < 2**31 for x in seeds):
        raise argparse.ArgumentTypeError(f"seeds are 0 to {2**31 - 1}; got {text!r}")
    return seeds


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=_seeds, help="comma-separated seeds: only the structured "
                                                 "scenarios, each seed, averaged")
    ap.add_argument("--scenario", action="append", choices=STRUCTURED,
                    help="with --seeds: only this one (may be given twice)")
    args = ap.parse_args()
    if args.scenario and not args.seeds:
        ap.error("--scenario goes with --seeds")
    if args.seeds:
        over_seeds(args.seeds, tuple(args.scenario or STRUCTURED))
    else:
        main()
