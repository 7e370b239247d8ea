"""Load that comes back while the host cannot act, on a rack the host had shed: the bus as
the emulated rack's physics log has it (whole commands, as a user runs them).

`powerflow run RACK --emulate --jobs JOBS` on the small rack with 500-W converters; all eight
devices start one training job at once 20 s into the emulation, from idle (546 W) to
1,740 W, more than the converters the host keeps on at idle carry. The host process is
SIGSTOPped from 0.4 s before the start for PAUSE s (1.8 by default: under the nodes' 2-s
failsafe timer). Per run: the lowest bus during the pause and in the 3 s after it, the
seconds under 0.95 x 12 V (brownout), and when every converter ran (s from the stop).
The same disturbance as tests/chaos/test_chaos_standby.py.

    .venv/bin/python bench/bench_standby.py --runs 3
    PYTHONPATH=<an older tree>/host:<…>/protocol:<…>/firmware .venv/bin/python \\
        bench/bench_standby.py --runs 3        # the same on another version
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import powerflow
from powerflow.testing.chaos import joint_start, running_host, wait_for

ROOT = Path(__file__).resolve().parents[1]
START_S = 20.0
BROWNOUT_V = 0.95 * 12.0


def one(folder: Path, pause_s: float) -> dict[str, float | None]:
    rack, jobs = joint_start(folder, ROOT / "examples" / "racks" / "small.toml", START_S)
    with running_host(folder, rack, "--jobs", str(jobs)) as h:
        first = h.physics()[0].t
        wait_for(lambda: (ln := h.physics(since=time.time() - 0.5)) and not all(
            ln[-1].on.values()), START_S - 3.0, "a converter shed")
        time.sleep(max(0.0, first + START_S - 0.4 - time.time()))
        t_stop = time.time()
        h.pause(pause_s)
        t_cont = time.time()
        time.sleep(3.2)  # the window measured after the pause
        during = h.physics(t_stop, t_cont)
        after = h.physics(t_cont, t_cont + 3.0)
        lines = during + after
        dt = [b.t - a.t for a, b in zip(lines, lines[1:], strict=False)]
        under = sum(d for ln, d in zip(lines, dt, strict=False) if ln.vmin < BROWNOUT_V)
        on = next((ln.t - t_stop for ln in lines if all(ln.on.values())), None)
        return {"min_v_pause": min(ln.vmin for ln in during),
                "min_v_after": min(ln.vmin for ln in after), "brownout_s": under,
                "all_on_s": on}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pause", type=float, default=1.8, help="s the host is stopped")
    args = ap.parse_args()
    print(f"powerflow from {Path(powerflow.__file__).parents[1]}")
    print("| run | min bus V in the pause | min bus V 3 s after | s under 11.4 V | "
          "every converter on at (s from the stop) |")
    print("|---|---|---|---|---|")
    for k in range(args.runs):
        with tempfile.TemporaryDirectory() as d:
            r = one(Path(d), args.pause)
        on = "never" if r["all_on_s"] is None else f"{r['all_on_s']:.2f}"
        print(f"| {k + 1} | {r['min_v_pause']:.2f} | {r['min_v_after']:.2f} | "
              f"{r['brownout_s']:.1f} | {on} |", flush=True)


if __name__ == "__main__":
    main()
