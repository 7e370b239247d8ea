"""The engine on pandapower's grids, side by side with pandapower itself (in-process figures
on this machine; the first call of each kernel is a warm-up and not counted):

- one load flow: ours (the radial sweep with ratios and shunts) against `pandapower.runpp`,
  and the batch kernel per configuration;
- CIGRE MV (with its PV and wind) : every radial configuration, exactly (goal <= 0.1 s);
- mv_oberrhein (179 buses, 2 substations, 153 DG, 5.7e8 radial configurations): branch
  exchange, then the branch-and-bound's proved gap after 30 and 60 s (goal: 0.1 % in 30 s);
- a day of 96 intervals on mv_oberrhein (goal <= 5 min), against the base configuration all
  day and the best static one.

    .venv/bin/python bench/bench_pandapower.py [--quick]
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import pandapower as pp
import pandapower.networks as pn

from powerflow.grid import batch
from powerflow.grid.day import Profiles, plan_day
from powerflow.grid.loadflow import solve_radial
from powerflow.grid.pandapower_io import from_pandapower, net_injections
from powerflow.grid.reconfiguration import reconfigure

warnings.filterwarnings("ignore")


def timed(fn, n: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def day_profiles(net, case, nmap) -> Profiles:
    """96 quarter hours: an evening-peaked load and a midday sun on every static generator."""
    els = net_injections(net, nmap, case.base_mva)
    ps, qs, labels = [], [], []
    for k in range(96):
        h = k / 4
        load = 0.55 + 0.35 * np.exp(-((h - 19) / 3) ** 2) + 0.2 * np.exp(-((h - 8) / 2) ** 2)
        sun = max(0.0, float(np.sin(np.pi * (h - 6) / 14))) if 6 <= h <= 20 else 0.0
        pb, qb = np.zeros(case.n_bus), np.zeros(case.n_bus)
        for kind, _i, bus, pe, qe in els:
            f = sun if kind == "sgen" else load
            pb[bus] += pe * f
            qb[bus] += qe * f
        ps.append(pb)
        qs.append(qb)
        labels.append(f"{int(h):02d}:{int(60 * (h % 1)):02d}")
    return Profiles(tuple(labels), np.array(ps), np.array(qs), 0.25)


def main() -> None:
    quick = "--quick" in sys.argv
    print("| net | buses | ours: one load flow | batch kernel, per configuration | "
          "pandapower runpp | runpp / ours |")
    print("|---|---|---|---|---|---|")
    for name, make in (("create_cigre_network_mv(pv_wind)",
                        lambda: pn.create_cigre_network_mv(with_der="pv_wind")),
                       ("mv_oberrhein", pn.mv_oberrhein)):
        net = make()
        case, _ = from_pandapower(net, name)
        ours = timed(lambda c=case: solve_radial(c), 20)
        sets = np.flatnonzero(~case.closed)[None, :].repeat(200, axis=0)
        kern = timed(lambda c=case, s=sets: batch.evaluate(c, s), 5) / 200
        ref = timed(lambda n=net: pp.runpp(n), 5)
        print(f"| {name} | {case.n_bus} | {ours * 1e3:.2f} ms | {kern * 1e6:.0f} µs | "
              f"{ref * 1e3:.1f} ms | x{ref / ours:.0f} |")

    case, _ = from_pandapower(pn.create_cigre_network_mv(with_der="pv_wind"), "cigre")
    reconfigure(case)
    t = time.perf_counter()
    r = reconfigure(case)
    print(f"\nCIGRE MV (PV and wind), every radial configuration: {r.radial_configurations} "
          f"evaluated exactly in {(time.perf_counter() - t) * 1e3:.1f} ms, best "
          f"{r.best.loss_kw:.3f} kW (goal <= 0.1 s)")

    net = pn.mv_oberrhein()
    case, nmap = from_pandapower(net, "mv_oberrhein")
    t = time.perf_counter()
    ex = reconfigure(case, method="exchange")
    t_ex = time.perf_counter() - t
    base = solve_radial(case)
    print(f"\nmv_oberrhein: base {base.loss_kw:.1f} kW; branch exchange {ex.best.loss_kw:.1f} kW "
          f"in {t_ex:.2f} s ({ex.evaluated:,} configurations)")
    for limit in ((30.0,) if quick else (30.0, 60.0)):
        t = time.perf_counter()
        bb = reconfigure(case, method="misocp", time_limit=limit)
        print(f"  branch-and-bound, {limit:.0f} s: best {bb.best.loss_kw:.1f} kW, lower bound "
              f"{bb.extra['lower_bound_kw']:.1f} kW, gap {bb.optimality_gap:.2%} proved "
              f"({bb.extra['nodes']:.0f} nodes, {time.perf_counter() - t:.1f} s; goal 0.1 % "
              "in 30 s)")
    if quick:
        return
    prof = day_profiles(net, case, nmap)
    t = time.perf_counter()
    t = time.perf_counter()
    free = plan_day(case, prof, switch_cost_kwh=0.0)
    print(f"\nmv_oberrhein, a day of 96 quarter hours, switching free: {free.energy_kwh:.0f} kWh "
          f"lost with {free.operations} operations ({time.perf_counter() - t:.0f} s)")
    t = time.perf_counter()
    plan = plan_day(case, prof, switch_cost_kwh=5.0, max_ops_day=8)
    print(f"\nmv_oberrhein, a day of 96 quarter hours (switching 5 kWh an operation, at most 8): "
          f"{plan.energy_kwh:.0f} kWh lost with {plan.operations} operations; base all day "
          f"{plan.base_kwh:.0f} kWh, best static {plan.static_kwh:.0f} kWh; "
          f"{plan.candidates} candidates; {time.perf_counter() - t:.0f} s (goal <= 5 min)")


if __name__ == "__main__":
    main()
