"""Control-cycle time of the rack controller (forecast every device + allocate + check by the
exact load flow) for racks of 16 to 1,024 converters, p50/p99 over the periods run.

    .venv/bin/python bench/bench_control.py [--periods 60]

Racks are synthetic: 12 V, 600 W converters, four per segment, segments in a grid with ties
between neighbours (every fourth normally open), one device per converter with a random-walk
demand around 55 % of rating. Baseline in the same run: the safe allocation alone (every
converter on, no optimisation), to show what the optimiser costs.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from powerflow.control.controller import DeviceObs, NodeObs, RackController
from powerflow.control.policy import Policy
from powerflow.model.rack import parse_rack


def synthetic_rack(n_conv: int) -> dict:
    nseg = max(1, n_conv // 4)
    side = math.ceil(math.sqrt(nseg))
    segs = [f"S{k}" for k in range(nseg)]
    nodes = [{"id": i + 1, "segment": segs[i // 4], "rating_w": 600.0, "vout_max": 14.0,
              "iout_max": 50.0, "r_out": 0.012} for i in range(n_conv)]
    branches, used = [], set()
    for k in range(nseg):
        r, c = divmod(k, side)
        for j in ((k + 1) if c + 1 < side and k + 1 < nseg else None,
                  (k + side) if k + side < nseg else None):
            if j is None:
                continue
            owner = 4 * k + 1
            port = sum(1 for p in used if p[0] == owner)
            used.add((owner, port))
            branches.append({"id": f"{k}-{j}", "from": segs[k], "to": segs[j], "r": 0.0008,
                             "switch": "tie", "closed": len(branches) % 4 != 3,
                             "port": [owner, port]})
    devices = [{"id": f"d{i}", "segment": segs[i // 4], "priority": 1 + i % 3, "p_min_w": 60.0,
                "p_max_w": 500.0, "p_nom_w": 330.0} for i in range(n_conv)]
    return {"rack": {"name": f"synthetic-{n_conv}", "bus_voltage": 12.0},
            "feed": {"voltage": 48.0, "breaker_limit_w": 600.0 * n_conv},
            "segment": [{"id": s} for s in segs], "node": nodes, "branch": branches,
            "device": devices}


def run(n_conv: int, periods: int, safe_only: bool) -> np.ndarray:
    rack = parse_rack(synthetic_rack(n_conv))
    pol = Policy(optimise_deadline_ms=60000.0)
    ctrl = RackController(rack, pol)
    if safe_only:  # the baseline: no optimiser, the safe allocation straight away
        ctrl.policy = Policy(optimise_deadline_ms=1e-3)
    rng = np.random.default_rng(n_conv)
    demand = np.full(n_conv, 330.0)
    tel = {"MODE": 2, "FAULTS": 0, "IOUT_LIMIT": 50.0, "READ_IOUT": 27.0, "READ_VOUT": 12.2,
           "READ_TEMPERATURE_1": 45.0}
    nodes = {n.id: NodeObs(True, tel, 0.1) for n in rack.nodes}
    out = []
    for p in range(periods):
        demand = np.clip(demand + rng.normal(0, 15, n_conv), 60, 500)
        devs = {f"d{i}": DeviceObs(float(demand[i]), float(demand[i] / 500)) for i in range(n_conv)}
        t0 = time.perf_counter()
        a = ctrl.step(float(p), nodes, devs)
        out.append((time.perf_counter() - t0) * 1000)
        if not safe_only and a.fallback:
            raise SystemExit(f"{n_conv} converters: safe allocation at period {p}: {a.reason}")
    return np.array(out[5:])  # the first periods warm caches and forecasters


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--periods", type=int, default=60)
    ap.add_argument("--sizes", default="16,64,256,1024")
    args = ap.parse_args()
    print(f"{'converters':>10} {'p50 ms':>9} {'p99 ms':>9} {'safe-only p50':>14} {'ratio':>6}")
    for n in (int(x) for x in args.sizes.split(",")):
        full = run(n, args.periods, False)
        safe = run(n, max(15, args.periods // 4), True)
        print(f"{n:>10} {np.percentile(full, 50):9.2f} {np.percentile(full, 99):9.2f} "
              f"{np.percentile(safe, 50):14.2f} {np.percentile(full, 50) / np.percentile(safe, 50):6.1f}")


if __name__ == "__main__":
    main()
