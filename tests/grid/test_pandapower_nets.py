"""pandapower nets in and out: transformers (ratio, tap, magnetising branch), line charging,
line and transformer switches, merged bus-bus switches, several substations, static
generators. Held against pandapower's own `runpp` (voltages and losses) and, for
reconfiguration, against exhaustive enumeration with `runpp` as the solver."""

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

from powerflow.grid.case import CaseError
from powerflow.grid.loadflow import solve
from powerflow.grid.pandapower_io import from_pandapower, write_net
from powerflow.grid.reconfiguration import reconfigure

warnings.filterwarnings("ignore", module="pandapower")


def runpp(net) -> bool:
    try:
        pp.runpp(net, tolerance_mva=1e-10, max_iteration=50)
        return True
    except pp.LoadflowNotConverged:
        return False


def pp_losses_kw(net) -> tuple[float, float]:
    lines = float(net.res_line.pl_mw.sum()) * 1e3
    return lines + float(net.res_trafo.pl_mw.sum()) * 1e3, lines


def assert_agrees(case, r, net) -> None:
    """Our flow against runpp on the same net: every energised bus within 1e-6 p.u., the
    losses (total and lines only) within 0.1 %."""
    assert r.converged, r.message
    assert runpp(net)
    vm = net.res_bus.vm_pu
    for b, v in zip(case.bus_ids, r.vm, strict=True):
        assert abs(v - vm[int(b)]) < 1e-6, (int(b), v, vm[int(b)])
    total, lines = pp_losses_kw(net)
    assert r.loss_kw == pytest.approx(total, rel=1e-3)
    lines_ours = float(r.branch_losses().real[[lab.startswith("line ") for lab in case.labels]]
                       .sum()) * case.base_mva * 1e3
    assert lines_ours == pytest.approx(lines, rel=1e-3)


NETS = {
    "cigre_mv": lambda: pn.create_cigre_network_mv(),
    "cigre_mv_der": lambda: pn.create_cigre_network_mv(with_der="pv_wind"),
    "cigre_mv_all_der": lambda: pn.create_cigre_network_mv(with_der="all"),
    "mv_oberrhein": lambda: pn.mv_oberrhein(),
    "case33bw": lambda: pn.case33bw(),
}


@pytest.mark.parametrize("name", NETS)
def test_flows_agree_with_pandapower(name) -> None:
    net = NETS[name]()
    case, _ = from_pandapower(net, name)
    assert_agrees(case, solve(case), net)


def random_feeder(seed: int):
    """A 110/20 kV substation and a meshed 20 kV feeder of 10 buses: 3 tie lines with
    switches (at one end or both), sectionalising switches on some tree lines, cables with
    charging, loads and static generators (some buses exporting)."""
    rng = np.random.default_rng(seed)
    net = pp.create_empty_network()
    hv = pp.create_bus(net, 110.0)
    pp.create_ext_grid(net, hv, vm_pu=1.02)
    mv = [pp.create_bus(net, 20.0) for _ in range(11)]
    pp.create_transformer_from_parameters(net, hv, mv[0], sn_mva=25, vn_hv_kv=110, vn_lv_kv=20,
                                          vkr_percent=0.3, vk_percent=12, pfe_kw=20,
                                          i0_percent=0.07, tap_side="hv", tap_neutral=0,
                                          tap_min=-9, tap_max=9, tap_step_percent=1.5,
                                          tap_pos=int(rng.integers(-3, 4)),
                                          tap_changer_type="Ratio")

    def line(a, b):
        return pp.create_line_from_parameters(
            net, a, b, length_km=float(rng.uniform(0.5, 4.0)), r_ohm_per_km=0.16,
            x_ohm_per_km=0.12, c_nf_per_km=float(rng.uniform(100, 300)), max_i_ka=0.4)

    for k in range(1, 11):
        a = mv[int(rng.integers(0, k))]
        ln = line(a, mv[k])
        if rng.random() < 0.4:  # a sectionalising switch
            pp.create_switch(net, a, ln, et="l", closed=True)
    pairs = set()
    while len(pairs) < 3:
        a, b = sorted(int(x) for x in rng.choice(11, 2, replace=False))
        pairs.add((a, b))
    for a, b in sorted(pairs):
        ln = line(mv[a], mv[b])
        pp.create_switch(net, mv[a], ln, et="l", closed=False)
        if rng.random() < 0.5:
            pp.create_switch(net, mv[b], ln, et="l", closed=True)
    for k in range(1, 11):
        pp.create_load(net, mv[k], p_mw=float(rng.uniform(0.2, 1.5)),
                       q_mvar=float(rng.uniform(0.05, 0.4)))
        if rng.random() < 0.35:
            pp.create_sgen(net, mv[k], p_mw=float(rng.uniform(0.5, 3.0)),
                           q_mvar=float(rng.uniform(-0.2, 0.2)))
    return net


def radial_open_sets(case):
    """Every set of switchable branches whose opening leaves a spanning tree (the feeds
    merged), by brute force over subsets: an oracle independent of the engine's own
    matroid enumeration."""
    sw = np.flatnonzero(case.switchable)
    m = case.n_branch - (case.n_bus - len(case.slack))
    out = []
    for combo in itertools.combinations(sw, m):
        parent = list(range(case.n_bus))

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        root = int(case.slack[0])
        for s in case.slack[1:]:
            parent[find(int(s))] = find(root)
        ok = True
        for b in range(case.n_branch):
            if b in combo:
                continue
            u, w = find(int(case.f[b])), find(int(case.t[b]))
            if u == w:
                ok = False
                break
            parent[u] = w
        if ok:
            out.append(tuple(int(b) for b in combo))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_reconfiguration_with_dg_matches_exhaustive_pandapower(seed) -> None:
    net = random_feeder(seed)
    case, nmap = from_pandapower(net, f"feeder{seed}")
    assert np.any(case.p_load < 0), "a bus exports (DG above its load)"
    sets = radial_open_sets(case)
    best = None
    for o in sets:
        w = write_net(net, nmap, case, o)
        if runpp(w):
            total, _ = pp_losses_kw(w)
            if best is None or total < best[0]:
                best = (total, o)
    res = reconfigure(case, top_k=3, method="enumerate")
    assert res.radial_configurations == len(sets)
    assert res.best is not None and best is not None
    assert res.best.loss_kw == pytest.approx(best[0], rel=1e-6)
    # the branch-and-bound (its relaxation with ratios, shunts and DG) finds it too, and
    # proves it: its lower bound may not exceed the true optimum
    bb = reconfigure(case, method="misocp", time_limit=60, gap=1e-3)
    assert bb.best is not None and bb.extra["proved_optimal"] == 1.0
    assert bb.extra["lower_bound_kw"] <= best[0] * (1 + 1e-9)
    assert bb.best.loss_kw <= best[0] * (1 + 1e-3)
    # and the configuration written back is what pandapower solves to the same figures
    w = write_net(net, nmap, case, res.best.open_branches)
    assert_agrees(case.with_open(list(res.best.open_branches)), res.best.flow, w)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "powerflow.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_reconfigure_a_pandapower_net_and_write_it_back(tmp_path) -> None:
    src = tmp_path / "cigre.json"
    pp.to_json(pn.create_cigre_network_mv(with_der="pv_wind"), str(src))
    out = tmp_path / "chosen.json"
    r = cli("reconfigure", str(src), "--json", "--write-net", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["method"] == "enumeration" and res["optimality_gap"] == 0.0
    net = pp.from_json(str(out))
    open_lines = sorted(int(i) for i in net.switch[~net.switch.closed].element
                        if int(i) in net.line.index)
    assert open_lines == res["open_lines"]
    assert runpp(net)
    total, lines = pp_losses_kw(net)
    assert res["loss_kw"] == pytest.approx(total, rel=1e-3)
    assert res["loss_lines_kw"] == pytest.approx(lines, rel=1e-3)
    assert res["vmin_pu"] == pytest.approx(float(net.res_bus.vm_pu.min()), abs=1e-5)
    assert int(net.res_bus.vm_pu.idxmin()) == res["vmin_bus"]
    r = cli("flow", "pandapower:create_cigre_network_mv", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["open_lines"] == [12, 13, 14]


def test_bad_nets_are_refused_naming_the_element(tmp_path) -> None:
    def msg(net) -> str:
        with pytest.raises(CaseError) as e:
            from_pandapower(net, "bad")
        return str(e.value)

    net = pn.create_cigre_network_mv()
    b = pp.create_bus(net, 0.4)
    pp.create_transformer3w(net, 1, 2, b, std_type="63/25/38 MVA 110/20/10 kV")
    assert "trafo3w 0" in msg(net) and "three-winding" in msg(net)
    net = pn.create_cigre_network_mv()
    lone = pp.create_bus(net, 20.0)
    lone2 = pp.create_bus(net, 20.0)
    pp.create_line(net, lone, lone2, 1.0, "NA2XS2Y 1x240 RM/25 12/20 kV")
    pp.create_load(net, lone2, p_mw=0.1)
    assert f"bus {lone}" in msg(net) and "no external grid" in msg(net)
    net = pn.create_cigre_network_mv()
    pp.create_line(net, 0, 5, 1.0, "NA2XS2Y 1x240 RM/25 12/20 kV")
    assert "110 kV" in msg(net) and "transformer belongs" in msg(net)
    net = pn.create_cigre_network_mv()
    s = pp.create_switch(net, 5, 4, et="l")  # line 4 runs from bus 5
    net.switch.at[s, "element"] = 99  # as a hand-edited JSON file may have it
    assert f"switch {s}: line 99 does not exist" in msg(net)
    net.switch.at[s, "element"] = 2
    assert f"switch {s}: bus 5 is not an end of line 2" in msg(net)
    net = pn.create_cigre_network_mv()
    pp.create_switch(net, 5, 6, et="b", closed=False)
    assert "open bus-bus switch" in msg(net)
    net = pn.create_cigre_network_mv()
    net.ext_grid.in_service = False
    assert "no external grid in service" in msg(net)
    # the CLI: one line, exit 2, no traceback
    (tmp_path / "x.json").write_text("{not json")
    for spec in ("pandapower:no_such_net", str(tmp_path / "x.json"), str(tmp_path / "y.json")):
        r = cli("reconfigure", spec)
        assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, \
            r.stderr
    r = cli("reconfigure", "ieee33", "--write-net", str(tmp_path / "o.json"))
    assert r.returncode == 2 and "needs a pandapower net" in r.stderr


@pytest.mark.parametrize("name", ["mv_oberrhein", "feeder1", "cigre_mv_all_der"])
def test_the_batch_kernel_agrees_with_the_exact_load_flow(name) -> None:
    """The kernel that evaluates configurations in bulk (ratios, end shunts, lines kept at
    one end) against the exact sweep, configuration by configuration."""
    from powerflow.grid import batch
    from powerflow.grid.exchange import neighbours
    from powerflow.grid.topology import enumerate_radial

    net = random_feeder(1) if name == "feeder1" else NETS[name]()
    case, _ = from_pandapower(net, name)
    cur = np.flatnonzero(~case.closed)
    sets = (np.vstack([cur[None, :], neighbours(case, cur)]) if name == "mv_oberrhein"
            else enumerate_radial(case, 10_000))
    fast = batch.evaluate(case, sets)
    ref = batch._evaluate_exact(case, sets)
    assert np.array_equal(fast.converged, ref.converged)
    ok = ref.converged
    assert ok.sum() >= 1
    assert np.max(np.abs(fast.loss_pu[ok] - ref.loss_pu[ok]) / ref.loss_pu[ok]) < 1e-6
    assert np.max(np.abs(fast.vmin_pu[ok] - ref.vmin_pu[ok])) < 1e-8
