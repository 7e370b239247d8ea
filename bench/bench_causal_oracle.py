"""What any forecaster could close of inference-day's gap: the oracle arm without foresight of
what no model can know in advance.

inference-day's request bursts start each second with a fixed probability (a Bernoulli draw
per second, scaled by the diurnal curve: memoryless), and its batch jobs arrive after
exponential gaps (memoryless too). The `oracle` arm knows both ahead. Two weaker oracles,
each perfect on everything else, bound what a forecaster can do:

- `oracle-no-bursts`: a burst is known only once it has begun (its end is then known);
- `oracle-causal`: the same, and a batch job too is known only once it has begun (its end
  then known);
- `oracle-now`: the same, but a batch device is taken to stay as it is now (a running job's
  end unknown too): perfect only on the inference replicas' curve and begun bursts.

Each is run beside the reactive, predictive and full-oracle arms, the same seeds, rack and
events; the table gives every arm's share of the reactive-to-oracle gap it closes (on the
means over seeds), as `bench_arms.py --seeds` does. In-process, fast mode, the runs in
processes of their own (two at a time per CPU).

    .venv/bin/python -u bench/bench_causal_oracle.py --seeds 1,2,3,4,5
    .venv/bin/python -u bench/bench_causal_oracle.py --arms oracle-no-bursts,oracle-causal

With `--arms` naming only some (the runs are deterministic: the other arms' figures are
those of `bench_arms.py --seeds ... --scenario inference-day` at the same code), the shares
are printed where reactive and oracle are among them.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

from powerflow.emulator.workloads import Workload
from powerflow.scenario.arms import Oracle
from powerflow.scenario.pool import usable_cpus
from powerflow.scenario.runner import VALUE_OUTCOMES, ScenarioRun, arm_outcomes, gap_closed
from powerflow.scenario.spec import load_scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "examples" / "scenarios" / "inference-day.toml"


def known_utilisation(wl: Workload, t: float, now: float, batch: str) -> np.ndarray:
    """Each device's utilisation at trace time `t` as known at trace time `now`: bursts that
    begin after `now` left out; batch jobs as they will be (`batch` "all"), without those
    that begin after `now` ("begun"), or as they are now, every job's end unknown too
    ("now")."""
    out = wl.utilisation(t)
    for j in wl.jobs:
        if t <= now or (j.kind == "batch" and batch == "all"):
            continue
        idx = np.array(j.devices, np.int64)
        if j.kind == "inference":
            out[idx] = np.clip(wl._gen_inference(j, t, idx, begun_by=now), 0.0, 1.0)
        elif j.kind == "batch" and batch == "begun":
            out[idx] = np.clip(wl._gen_batch(j, t, idx, begun_by=now), 0.0, 1.0)
        elif j.kind == "batch":
            out[idx] = np.clip(wl._gen_batch(j, now, idx), 0.0, 1.0)
    return out


class CausalOracle(Oracle):
    """The oracle, blind to bursts not yet begun, and to batch jobs as `batch` says (see
    `known_utilisation`)."""

    def __init__(self, *args: object, batch: str) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.batch = batch

    def _demand(self, t: float) -> np.ndarray:
        ph = self.ph
        wl = ph.workload
        assert wl is not None
        real = ph.utilisations
        ph.utilisations = lambda tt: known_utilisation(  # type: ignore[method-assign]
            wl, tt * ph.trace_speed, ph.t * ph.trace_speed, self.batch)
        try:
            return super()._demand(t)
        finally:
            ph.utilisations = real  # type: ignore[method-assign]


def run_arm(args: tuple[int, str]) -> tuple[int, str, dict]:
    seed, arm = args
    sc = dataclasses.replace(load_scenario(SCENARIO), seed=seed)
    base = "oracle" if arm.startswith("oracle") else arm
    r = ScenarioRun(sc, "controlled", base)
    if arm in BATCH:
        from powerflow.control.controller import HORIZONS

        assert r.ctrl is not None
        r.ctrl.forecaster = CausalOracle(r.fr.physics, HORIZONS, sc.period_s, sc.events,
                                         batch=BATCH[arm])
    return seed, arm, arm_outcomes(r.run(), sc)


# the weaker oracles: what each knows of the batch jobs (`known_utilisation`)
BATCH = {"oracle-no-bursts": "all", "oracle-causal": "begun", "oracle-now": "now"}
ARMS = ("reactive", "predictive", "oracle", *BATCH)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated seeds (1,2,3,4,5)")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {ARMS}")
    args = ap.parse_args()
    seeds = [int(x) for x in args.seeds.split(",")]
    arms = tuple(a for a in args.arms.split(",") if a)
    if not arms or any(a not in ARMS for a in arms):
        ap.error(f"--arms: expected some of {', '.join(ARMS)}")
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(2 * usable_cpus()) as pool:
        got = pool.map(run_arm, [(s, a) for s in seeds for a in arms])
    by = {(s, a): o for s, a, o in got}
    mean = {a: {k: float(np.mean([by[s, a][k] for s in seeds])) for k in VALUE_OUTCOMES}
            for a in arms}
    print(f"inference-day, seeds {seeds} ({time.perf_counter() - t0:.0f} s)\n")
    print("| arm | unmet Wh mean | feed violations mean | share of the gap closed: unmet | "
          "violations |")
    print("|---|---|---|---|---|")
    for a in arms:
        v = gap_closed({**mean, "x": mean[a]}, "x")
        cells = ["—" if v.get(k) is None else f"{v[k]:.2f}"
                 for k in ("capped_wh", "feed_limit_violations")]
        print(f"| {a} | {mean[a]['capped_wh']:.2f} | {mean[a]['feed_limit_violations']:.1f} | "
              f"{cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
