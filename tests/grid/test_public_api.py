"""The engine's public API as README shows it: load, solve, reconfigure, write back, plan a
day, optimise flexible buses; each checked against what it claims (pandapower's runpp on the
written net, the enumeration's optimum)."""

from __future__ import annotations

import warnings

import numpy as np
import pandapower as pp
import pytest

from powerflow import grid

warnings.filterwarnings("ignore", module="pandapower")


def test_the_public_api_end_to_end(tmp_path) -> None:
    case, source = grid.load("pandapower:create_cigre_network_mv")
    assert isinstance(case, grid.Case) and source is not None
    flow = grid.solve(case)
    assert isinstance(flow, grid.FlowResult) and flow.converged
    best = grid.reconfigure(case)
    assert isinstance(best, grid.ReconfigResult) and best.optimality_gap == 0.0
    net = grid.write_net(source.net, source.map, case, best.best.open_branches)
    pp.runpp(net)
    total = (net.res_line.pl_mw.sum() + net.res_trafo.pl_mw.sum()) * 1e3
    assert best.best.loss_kw == pytest.approx(total, rel=1e-3)
    f = tmp_path / "day.csv"
    f.write_text("time,load,sgen\n00:00,0.6,0\n12:00,1.0,1.0\n")
    day = grid.plan_day(case, grid.read_profiles(f, case, source), 5.0)
    assert isinstance(day, grid.DayPlan) and len(day.open_sets) == 2
    opt = grid.solve_flex(grid.builtin("ieee33"), c_loss=1.0, c_flex=0.5)
    assert opt.feasible and np.isfinite(opt.cost)
    with pytest.raises(AttributeError):
        grid.no_such_thing  # noqa: B018
    with pytest.raises(grid.CaseError):
        grid.load("pandapower:nope")
