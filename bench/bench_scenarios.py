"""Every shipped scenario (examples/scenarios) on the emulated rack in fast mode, with its two
baselines: all converters on with even sharing, and droop only. A scenario's three runs go
at once, each in a process of its own (`scenario.pool`); "run s" is the three together.

    .venv/bin/python bench/bench_scenarios.py [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from powerflow.scenario.runner import run
from powerflow.scenario.spec import load_scenario

HERE = Path(__file__).resolve().parent.parent / "examples" / "scenarios"
ORDER = ["light-load", "converter-failure", "link-loss", "heat-wave", "load-spike", "mixed-day"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [run(load_scenario(HERE / f"{name}.toml")) for name in ORDER]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"| scenario | feed viol. | P1 brownouts | re-share | OT trips | loss Wh | even Wh | "
          f"droop Wh | saved vs even | saved vs droop | cycle p50/p99 ms | run s |")
    print("|" + "---|" * 12)
    for r in rows:
        print(f"| {r['scenario']} | {r['feed_limit_violations']} "
              f"(baselines {r['baseline_even_feed_limit_violations']}/"
              f"{r['baseline_droop_feed_limit_violations']}) | {r['priority1_brownouts']} | "
              f"{r['max_reshare_periods']} | {r['overtemp_trips']} | {r['energy_loss_wh']:.3f} | "
              f"{r['baseline_even_loss_wh']:.3f} | {r['baseline_droop_loss_wh']:.3f} | "
              f"{r['loss_saved_vs_even_pct']:.1f} % | {r['loss_saved_vs_droop_pct']:.1f} % | "
              f"{r['cycle_ms_p50']:.1f} / {r['cycle_ms_p99']:.1f} | {r['elapsed_s']:.0f} |")


if __name__ == "__main__":
    main()
