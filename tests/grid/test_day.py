"""Reconfiguration through a day: the plan held against exhaustive enumeration of every plan
(every configuration in every interval) on small feeders with DG, and the CLI with profile
files as a user writes them."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import warnings

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest

from powerflow.grid.day import Profiles, _losses, plan_day
from powerflow.grid.pandapower_io import from_pandapower, net_injections
from powerflow.grid.topology import enumerate_radial
from tests.grid.test_pandapower_nets import random_feeder

warnings.filterwarnings("ignore", module="pandapower")


def profiles(net, case, nmap, t: int, seed: int) -> Profiles:
    rng = np.random.default_rng(seed)
    els = net_injections(net, nmap, case.base_mva)
    ps, qs = [], []
    for _ in range(t):
        fl, fs = rng.uniform(0.3, 1.3), rng.uniform(0.0, 1.5)
        pb, qb = np.zeros(case.n_bus), np.zeros(case.n_bus)
        for kind, _i, bus, pe, qe in els:
            f = fl if kind == "load" else fs
            pb[bus] += pe * f
            qb[bus] += qe * f
        ps.append(pb)
        qs.append(qb)
    return Profiles(tuple(str(k) for k in range(t)), np.array(ps), np.array(qs), 1.0)


def brute_force(case, prof, cost, max_day, max_switch) -> float:
    """The least cost over every plan (K^T of them)."""
    sets = enumerate_radial(case, 10_000)
    loss = _losses(case, prof, sets, None) * prof.interval_h
    member = np.zeros((len(sets), case.n_branch), bool)
    for k, s in enumerate(sets):
        member[k, s] = True
    best = np.inf
    for plan in itertools.product(range(len(sets)), repeat=len(prof.labels)):
        e = sum(loss[t, k] for t, k in enumerate(plan))
        if not np.isfinite(e) or e >= best:
            continue
        per = np.zeros(case.n_branch, int)
        for a, b in zip(plan, plan[1:]):
            per += member[a] != member[b]
        ops = int(per.sum())
        if (max_day is not None and ops > max_day) or (max_switch is not None
                                                       and per.max() > max_switch):
            continue
        best = min(best, e + cost * ops)
    return best


@pytest.mark.parametrize("seed", [0, 2, 3])
@pytest.mark.parametrize(("cost", "max_day", "max_switch"),
                         [(0.0, None, None), (5.0, None, None), (1.0, 2, None), (0.5, 4, 1)])
def test_the_plan_is_the_best_of_every_plan(seed, cost, max_day, max_switch) -> None:
    net = random_feeder(seed)
    case, nmap = from_pandapower(net, f"feeder{seed}")
    prof = profiles(net, case, nmap, 5, seed)
    plan = plan_day(case, prof, cost, max_day, max_switch)
    best = brute_force(case, prof, cost, max_day, max_switch)
    assert plan.cost_kwh >= best - 1e-9  # nothing beats every plan ...
    if plan.exact:
        assert plan.cost_kwh == pytest.approx(best, rel=1e-9)  # ... and an exact one is it
    else:  # a per-switch limit bound: a restriction, said so; still within the limits
        assert max_switch is not None
    assert max_day is None or plan.operations <= max_day
    assert max_switch is None or max(plan.per_switch.values(), default=0) <= max_switch
    assert plan.energy_kwh + cost * plan.operations == pytest.approx(plan.cost_kwh)
    assert plan.static_kwh is not None and plan.cost_kwh <= plan.static_kwh + 1e-9


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "powerflow.cli", "reconfigure", *args],
                          capture_output=True, text=True, timeout=300)


def test_a_day_on_a_pandapower_net_from_the_cli(tmp_path) -> None:
    net = random_feeder(0)
    src = tmp_path / "feeder.json"
    pp.to_json(net, str(src))
    sgen = int(net.sgen.index[0])
    rows = ["time,load,sgen,sgen.%d" % sgen]
    for h in range(24):
        sun = max(0.0, float(np.sin(np.pi * (h - 6) / 12)))
        rows.append(f"{h:02d}:00,{0.5 + 0.5 * np.sin(np.pi * h / 24):.3f},{sun:.3f},"
                    f"{min(1.5 * sun, 2):.3f}")
    prof = tmp_path / "day.csv"
    prof.write_text("\n".join(rows) + "\n")
    r = cli(str(src), "--profiles", str(prof), "--switch-cost", "0.2", "--max-ops-day", "6",
            "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out["intervals"]) == 24 and out["interval_h"] == 1.0
    assert out["exact"] is True and out["operations"] <= 6
    assert out["energy_kwh"] <= out["base_kwh"] + 1e-9
    assert out["cost_kwh"] <= out["static_kwh"] + 1e-9  # staying put is one of the plans
    assert sum(out["operations_per_switch"].values()) == out["operations"]
    lines = set(int(i) for i in net.line.index)
    assert all(set(iv["open_lines"]) <= lines for iv in out["intervals"])
    # what the plan says an interval loses is what the exact load flow of it says
    assert all(iv["loss_kw"] > 0 for iv in out["intervals"])


@pytest.mark.parametrize(("text", "message"), [
    ("time,load\n00:00,x\n", "row 2: column 'load': 'x' is not a number"),
    ("time,load\n00:00,-1\n", "row 2: column 'load': '-1' is out of range"),
    ("time,wind\n00:00,1\n", "column 'wind': expected load"),
    ("time,load\n00:00,1,2\n", "row 2: 3 values for 2 columns"),
    ("time,load.999\n00:00,1\n", "column 'load.999'"),
    ("time,load\n", "at least one interval"),
])
def test_bad_profiles_are_refused_naming_row_and_column(tmp_path, text, message) -> None:
    f = tmp_path / "p.csv"
    f.write_text(text)
    r = cli("pandapower:create_cigre_network_mv", "--profiles", str(f))
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = cli("ieee33", "--profiles", str(tmp_path / "missing.csv"))
    assert r.returncode == 2 and "no such file" in r.stderr


def test_cigre_day_every_configuration(tmp_path) -> None:
    """CIGRE MV with its DER through a day: all three radial configurations weighed."""
    f = tmp_path / "p.csv"
    f.write_text("time,load,sgen\n" + "".join(f"{h},{0.4 + h / 40:.3f},{h % 12 / 12:.3f}\n"
                                             for h in range(24)))
    case, nmap = from_pandapower(pn.create_cigre_network_mv(with_der="pv_wind"), "cigre")
    from powerflow.grid.cases import NetSource
    from powerflow.grid.day import read_profiles

    prof = read_profiles(f, case, NetSource(pn.create_cigre_network_mv(with_der="pv_wind"),
                                            nmap))
    plan = plan_day(case, prof, 1.0)
    assert plan.exact and plan.candidates == 3
