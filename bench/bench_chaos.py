"""The controller against droop sharing alone (`--no-control`) through real disturbances.

    .venv/bin/python bench/bench_chaos.py [--json]

Runs `powerflow run examples/racks/small.toml --emulate` twice, with the control loop and
with `--no-control` (every converter at 12 V, sharing by droop: the rack with no
controller), and puts both through the same disturbances, one after another:

  cpu     4 x cores CPU-bound processes for 20 s
  host    SIGSTOP of the host process for 2 s, then SIGCONT
  node    SIGSTOP of node 2's MicroPython process for 2 s (its watchdog resets it)
  manual  node 2 set to 11.8 V by hand (the control loop paused first, resumed after)
  clear   clear-faults on all four nodes at once
  failure converter 3 fails (repaired and cleared afterwards)

Each is measured from its start to 15 s after its end, from the emulated rack's own
physics log: undervoltage-seconds (lowest bus under 0.95 x 12 V), lowest bus, time from the
disturbance's end until the bus stays in band (0.97 x 12 V), device-seconds capped under
demand; and, from the host, verdicts on converters that had not failed (false exclusions).
Whole commands as a user runs them; figures in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "host"))

from powerflow.testing.chaos import RunningHost, hog, outcome, running_host, wait_for  # noqa: E402

RACK = ROOT / "examples" / "racks" / "small.toml"
AFTER_S = 15.0


def disturb(h: RunningHost, name: str, control: bool) -> tuple[float, float, int]:
    """Make disturbance `name`; returns (start, end, converters that really failed)."""
    t0 = time.time()
    failed = 0
    if name == "cpu":
        hog(4 * (os.cpu_count() or 2), 20.0)
    elif name == "host":
        h.pause(2.0)
    elif name == "node":
        h.send("POST", "/emulator/faults", {"kind": "node-pause", "node": 2, "seconds": 2.0})
        time.sleep(2.0)  # the disturbance lasts this long
    elif name == "manual":
        if control:
            h.send("PUT", "/control", {"enabled": False})
        h.send("POST", "/nodes/2/setpoint", {"vout": 11.8})
        time.sleep(3.0)  # the operator's setting holds this long
        if control:
            h.send("PUT", "/control", {"enabled": True})
        else:
            h.send("POST", "/nodes/2/setpoint", {"vout": 12.0})
    elif name == "clear":
        threads = [threading.Thread(target=lambda i=i: httpx.post(
            f"{h.url}/api/v1/nodes/{i}/clear-faults", timeout=10)) for i in (1, 2, 3, 4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=15)
    elif name == "failure":
        h.send("POST", "/emulator/faults", {"kind": "converter-failure", "node": 3})
        time.sleep(5.0)  # failed this long
        failed = 1
    return t0, time.time(), failed


def run_arm(control: bool, names: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp, running_host(Path(tmp), RACK,
                                                            control=control) as h:
        time.sleep(5.0)  # settle: forecasts and the plan under way
        for name in names:
            verdicts = h.api("/control")["verdicts"] if control else 0
            t0, t_end, failed = disturb(h, name, control)
            time.sleep(AFTER_S)  # the measurement window after the disturbance
            o = outcome(h, t0, t_end, time.time(), verdicts_before=verdicts, control=control)
            o.false_exclusions = max(0, o.false_exclusions - failed)
            out[name] = o.as_dict()
            if name == "failure":  # put it back for what follows
                h.send("POST", "/emulator/faults", {"kind": "converter-repair", "node": 3})
                h.send("POST", "/nodes/3/clear-faults")
                time.sleep(3.0)
            if control:
                out[name]["max_late_s"] = h.api("/control")["max_late_s"]
        if control:
            out["_alarms_raised"] = {"verdicts": h.api("/control")["verdicts"],
                                     "safe_mode_trips": h.api("/control")["safe_mode_trips"]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", default="cpu,host,node,manual,clear,failure",
                    help="comma-separated disturbances (default: all)")
    args = ap.parse_args()
    names = args.only.split(",")
    res = {"controller": run_arm(True, names), "droop_only": run_arm(False, names)}
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"{'disturbance':<12} {'arm':<11} {'UV s':>6} {'min bus V':>9} {'recovery s':>10} "
          f"{'capped dev-s':>12} {'false excl':>10}")
    worse = 0
    for name in names:
        for arm in ("controller", "droop_only"):
            o = res[arm][name]
            print(f"{name:<12} {arm:<11} {o['undervoltage_s']:6.1f} {o['min_bus_v']:9.3f} "
                  f"{'never' if o['recovery_s'] is None else format(o['recovery_s'], '.1f'):>10} "
                  f"{o['capped_device_s']:12.1f} {o['false_exclusions']:10d}")
        if res["controller"][name]["undervoltage_s"] > res["droop_only"][name]["undervoltage_s"]:
            worse += 1
    fe = sum(res["controller"][n]["false_exclusions"] for n in names)
    print(f"\ndisturbances where the controller had more undervoltage-seconds than droop only: "
          f"{worse} of {len(names)}; false exclusions: {fe}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
