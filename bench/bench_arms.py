"""What prediction buys: every shipped scenario under the three arms (the allocator fed by the
forecaster, by persistence, by perfect foresight), the same rack, seed and events; per arm
unmet energy (Wh), brownouts, feed-limit violations, converter switchings, losses (Wh), and
prediction_value (the share of the reactive-to-oracle gap the forecaster closes). In-process,
fast mode.

    .venv/bin/python bench/bench_arms.py
"""

from __future__ import annotations

import time
from pathlib import Path

from powerflow.scenario.runner import run_arms
from powerflow.scenario.spec import load_scenario

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    print("| scenario | arm | unmet Wh | brownouts | feed violations | switchings | loss Wh |")
    print("|---|---|---|---|---|---|---|")
    values = []
    for f in sorted((ROOT / "examples" / "scenarios").glob("*.toml")):
        sc = load_scenario(f)
        t = time.perf_counter()
        out = run_arms(sc)
        for arm, a in out["arms"].items():
            print(f"| {f.stem} | {arm} | {a['capped_wh']:.2f} | {a['brownouts']} | "
                  f"{a['feed_limit_violations']} | {a['converter_switchings']} | "
                  f"{a['loss_wh']:.2f} |")
        values.append((f.stem, out["prediction_value"], time.perf_counter() - t))
    print("\n| scenario | prediction_value: unmet energy | feed violations | brownouts | loss | "
          "time |")
    print("|---|---|---|---|---|---|")
    for name, v, el in values:
        cell = ["—" if v.get(k) is None else f"{v[k]:.2f}"
                for k in ("capped_wh", "feed_limit_violations", "brownouts", "loss_wh")]
        print(f"| {name} | " + " | ".join(cell) + f" | {el:.0f} s |")


if __name__ == "__main__":
    main()
