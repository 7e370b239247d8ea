"""Load flow against published figures and against pandapower (an independent solver)."""

from __future__ import annotations

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest

from powerflow.grid.case import CaseError
from powerflow.grid.loadflow import solve, solve_newton, solve_radial
from powerflow.grid.matpower import load_matpower, read_mpc
from powerflow.grid.pandapower_io import from_pandapower, to_pandapower
from tests.conftest import ROOT
from tests.grid.netgen import random_case

CASES = ROOT / "examples" / "cases"


def pandapower_solution(case):
    net = to_pandapower(case)
    pp.runpp(net, tolerance_mva=1e-9, max_iteration=50, init="flat")
    return net.res_bus.vm_pu.to_numpy() * np.exp(1j * np.deg2rad(net.res_bus.va_degree.to_numpy()))


def test_ieee33_matches_published_figures() -> None:
    r = solve(load_matpower(CASES / "case33bw.m"))
    assert r.converged and r.method == "bibc"
    assert r.loss_kw == pytest.approx(202.677, abs=5e-4)
    assert r.loss_kvar == pytest.approx(135.141, abs=5e-4)
    assert r.vmin_pu == pytest.approx(0.91309, abs=5e-6) and r.vmin_bus == 18


@pytest.mark.parametrize("name", ["case33bw", "case33mg", "case69", "case70da", "case118zh",
                                  "case136ma"])
def test_radial_cases_agree_with_pandapower(name: str) -> None:
    case = load_matpower(CASES / f"{name}.m")
    r = solve(case)
    assert r.converged and r.method == "bibc"
    assert np.max(np.abs(r.v - pandapower_solution(case))) < 1e-6


@pytest.mark.parametrize("name", ["case33bw", "case118zh", "case136ma"])
def test_meshed_cases_agree_with_pandapower(name: str) -> None:
    case = load_matpower(CASES / f"{name}.m").with_open([])  # every tie closed
    r = solve(case)
    assert r.converged and r.method == "newton"
    assert np.max(np.abs(r.v - pandapower_solution(case))) < 1e-6


def test_pandapower_loader_on_pandapowers_own_ieee33() -> None:
    net = pn.case33bw()
    pp.runpp(net, tolerance_mva=1e-12)
    r = solve(from_pandapower(net)[0])
    assert np.max(np.abs(r.vm - net.res_bus.vm_pu.to_numpy())) < 1e-6
    assert r.loss_kw == pytest.approx(net.res_line.pl_mw.sum() * 1e3, rel=1e-6)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dc", [False, True])
def test_random_networks_radial_and_meshed(seed: int, dc: bool) -> None:
    case = random_case(seed, n=14, ties=3, dc=dc)
    for c in (case, case.with_open([])):
        r = solve(c)
        assert r.converged
        assert np.max(np.abs(r.v - pandapower_solution(c))) < 1e-6
        if dc:
            assert np.max(np.abs(r.v.imag)) < 1e-12  # a DC network stays real
    radial = solve_radial(case)
    newton = solve_newton(case)
    assert np.max(np.abs(radial.v - newton.v)) < 1e-9


def test_overload_is_no_solution_not_a_result() -> None:
    case = load_matpower(CASES / "case33bw.m")
    heavy = case.with_loads(case.p_load * 8, case.q_load * 8)
    for r in (solve_radial(heavy), solve_newton(heavy)):
        assert not r.converged and np.all(np.isnan(r.v))
        assert "collapse" in r.message or "convergence" in r.message
    with pytest.raises(pp.LoadflowNotConverged):  # the oracle agrees there is none
        pp.runpp(to_pandapower(heavy), max_iteration=50)


def test_bibc_refuses_a_meshed_configuration() -> None:
    with pytest.raises(CaseError, match="not radial"):
        solve_radial(load_matpower(CASES / "case33bw.m").with_open([]))


@pytest.mark.parametrize(("text", "message"), [
    ("mpc.baseMVA = 10;\nmpc.bus = [1 3 0 0 0 0 1 1 0 12 1 1 1];\n", "mpc.branch is missing"),
    ("mpc.baseMVA = 10;\nmpc.bus = [1 3 0 0 0 0 1 1 0 12 1 1 1; 2 1 1 1 0 0 1 1 0 12 1 1 1];\n"
     "mpc.branch = [1 3 0.1 0.1 0 0 0 0 0 0 1 -360 360];\n", "names bus 3"),
    ("mpc.baseMVA = 10;\nmpc.bus = [1 3 0 0 0 0 1 1 0 12 1 1 1];\nmpc.branch = [];\n"
     "system('rm -rf /');\n", "unsupported"),
    ("mpc.baseMVA = 10;\nmpc.bus = [1 3 0 0; 2 1 1];\n", "different lengths"),
])
def test_bad_case_files_are_refused_clearly(tmp_path, text: str, message: str) -> None:
    p = tmp_path / "bad.m"
    p.write_text(text)
    with pytest.raises(CaseError, match=message):
        load_matpower(p)


def test_scaling_statements_are_applied() -> None:
    raw = read_mpc(CASES / "case33bw.m")
    assert raw["bus"][1, 2] == pytest.approx(0.1)  # 100 kW, converted to MW
    zbase = 12.66 ** 2 / 10
    assert raw["branch"][0, 2] == pytest.approx(0.0922 / zbase)
