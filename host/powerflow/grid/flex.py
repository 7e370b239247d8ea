"""Flexible buses: how much of their allowed demand change to use, alone and jointly with
reconfiguration (the problem of the seed paper).

    minimise  c_loss * losses (kW) + c_flex * sum over flexible buses of
              cost_bus * flexible power used there (kW + kvar)

over each flexible bus's P and Q range, subject to the load flow and voltage limits.
For a radial configuration the load flow is written as the branch-flow (DistFlow)
model with its second-order-cone relaxation (Farivar & Low 2013), exact on radial
networks when no load is over-satisfied; the cone program goes straight to
Clarabel. Every optimum is then checked with the exact load flow at the optimal
demands, and the checked figures are the ones reported.

Jointly with reconfiguration, configurations are visited in order of a lower
bound on their cost (their losses with every flexible demand at its minimum,
valid because losses grow with every load on a radial feeder) until no
remaining configuration can beat the best cost found: the global optimum over
all radial configurations, with one cone program for each configuration that
could still win.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import clarabel
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from powerflow.grid import batch
from powerflow.grid.case import Case, CaseError
from powerflow.grid.loadflow import FlowResult, orient, solve_radial
from powerflow.grid.topology import enumerate_radial
from powerflow.model.arrays import Floats



@dataclass(frozen=True)
class FlexResult:
    feasible: bool
    cost: float  # c_loss * loss_kw + c_flex * (flex_used_kw + flex_used_kvar)
    loss_kw: float  # exact load flow at the optimal demands
    flex_used_kw: float
    flex_used_kvar: float
    p_load: Floats  # p.u., the demands at the optimum
    q_load: Floats
    open_branches: tuple[int, ...]
    flow: FlowResult | None
    relaxation_loss_kw: float  # what the cone program said (exactness check)
    elapsed_s: float = 0.0
    configurations_solved: int = 1
    message: str = ""

    @classmethod
    def infeasible(cls, p_load: Floats, q_load: Floats, open_branches: tuple[int, ...],
                   message: str, elapsed_s: float, configurations_solved: int = 1, *,
                   flex_used_kw: float = 0.0, flex_used_kvar: float = 0.0,
                   flow: FlowResult | None = None,
                   relaxation_loss_kw: float = np.nan) -> FlexResult:
        """No demand within the flexible ranges meets the limits: the reason, at infinite cost."""
        return cls(feasible=False, cost=np.inf, loss_kw=np.nan, flex_used_kw=flex_used_kw,
                   flex_used_kvar=flex_used_kvar, p_load=p_load, q_load=q_load,
                   open_branches=open_branches, flow=flow,
                   relaxation_loss_kw=relaxation_loss_kw, elapsed_s=elapsed_s,
                   configurations_solved=configurations_solved, message=message)

    @property
    def relaxation_gap(self) -> float:
        return abs(self.relaxation_loss_kw - self.loss_kw) / max(self.loss_kw, 1e-12)


def _flex_arrays(case: Case) -> tuple[NDArray[np.int64], Floats, Floats, Floats, Floats]:
    idx = np.array([fb.bus for fb in case.flex], np.int64)
    return (idx, np.array([fb.p_min for fb in case.flex]), np.array([fb.p_max for fb in case.flex]),
            np.array([fb.q_min for fb in case.flex]), np.array([fb.q_max for fb in case.flex]))


def solve_flex(case: Case, c_loss: float, c_flex: float, vmin: float | None = None,
               vmax: float | None = None) -> FlexResult:
    """Optimal use of the flexible buses in the case's present (radial) configuration."""
    t0 = time.perf_counter()
    tree = orient(case)
    if len(case.slack) != 1:
        raise CaseError(f"{case.name}: the flexible-bus optimisation needs a single feed")
    n = case.n_bus
    kids = np.array([b for b in tree.order if tree.parent[b] >= 0], np.int64)
    m = len(kids)
    fidx, pmin, pmax, qmin, qmax = _flex_arrays(case)
    nf = len(fidx)
    fpos = {int(b): k for k, b in enumerate(fidx)}
    # variable layout
    iP, iQ, iL = 0, m, 2 * m
    iV = 3 * m
    iPF = iV + n
    iQF = iPF + nf
    iDP = iQF + nf
    iDQ = iDP + nf
    nx = iDQ + nf
    base = case.base_mva * 1e3  # p.u. -> kW
    r = case.r[tree.parent_branch[kids]]
    x = case.x[tree.parent_branch[kids]]
    zz = r * r + x * x
    qcost = np.zeros(nx)
    qcost[iL:iL + m] = c_loss * base * r
    weight = np.array([fb.cost for fb in case.flex])
    qcost[iDP:iDP + nf] = c_flex * base * weight
    qcost[iDQ:iDQ + nf] = c_flex * base * weight
    rows: list[tuple[dict[int, float], float]] = []  # equality rows: (coefficients, rhs)
    children_of: dict[int, list[int]] = {int(j): [] for j in kids}
    for k, j in enumerate(kids):
        par = int(tree.parent[j])
        if par in children_of:
            children_of[par].append(k)
    for k, j in enumerate(kids):
        children = children_of[int(j)]
        for (iX, res, load, ifl) in ((iP, r, case.p_load, iPF), (iQ, x, case.q_load, iQF)):
            row = {iX + k: 1.0, iL + k: -res[k]}
            for c in children:
                row[iX + c] = row.get(iX + c, 0.0) - 1.0
            if int(j) in fpos:
                row[ifl + fpos[int(j)]] = -1.0
                rows.append((row, 0.0))
            else:
                rows.append((row, float(load[j])))
        par = int(tree.parent[j])
        rows.append(({iV + int(j): 1.0, iV + par: -1.0, iP + k: 2 * r[k], iQ + k: 2 * x[k],
                      iL + k: -zz[k]}, 0.0))
    root = int(case.slack[0])
    rows.append(({iV + root: 1.0}, float(case.v_slack[0]) ** 2))
    ineq: list[tuple[dict[int, float], float]] = []  # a.x <= b
    lo = case.vmin if vmin is None else np.full(n, vmin)
    hi = case.vmax if vmax is None else np.full(n, vmax)
    for i in range(n):
        if i == root:
            continue
        ineq.append(({iV + i: 1.0}, float(hi[i]) ** 2))
        ineq.append(({iV + i: -1.0}, -float(lo[i]) ** 2))
    for k in range(m):
        ineq.append(({iL + k: -1.0}, 0.0))
    for k in range(nf):
        pb, qb = case.p_load[fidx[k]], case.q_load[fidx[k]]
        ineq += [({iPF + k: 1.0}, pmax[k]), ({iPF + k: -1.0}, -pmin[k]),
                 ({iQF + k: 1.0}, qmax[k]), ({iQF + k: -1.0}, -qmin[k]),
                 ({iPF + k: 1.0, iDP + k: -1.0}, pb), ({iPF + k: -1.0, iDP + k: -1.0}, -pb),
                 ({iQF + k: 1.0, iDQ + k: -1.0}, qb), ({iQF + k: -1.0, iDQ + k: -1.0}, -qb)]
    # cones: (v_parent + l, 2P, 2Q, v_parent - l) in SOC(4), written as s = b - A x with b = 0
    soc: list[dict[int, float]] = []
    for k, j in enumerate(kids):
        par = int(tree.parent[j])
        soc += [{iV + par: -1.0, iL + k: -1.0}, {iP + k: -2.0}, {iQ + k: -2.0},
                {iV + par: -1.0, iL + k: 1.0}]
    all_rows = [rw for rw, _ in rows] + [rw for rw, _ in ineq] + soc
    b = np.array([v for _, v in rows] + [v for _, v in ineq] + [0.0] * len(soc))
    ri, ci, vals = [], [], []
    for i, rw in enumerate(all_rows):
        for c, v in rw.items():
            ri.append(i)
            ci.append(c)
            vals.append(v)
    a = sp.csc_matrix((vals, (ri, ci)), shape=(len(all_rows), nx))
    cones = [clarabel.ZeroConeT(len(rows)), clarabel.NonnegativeConeT(len(ineq))]
    cones += [clarabel.SecondOrderConeT(4)] * m
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    solver = clarabel.DefaultSolver(sp.csc_matrix((nx, nx)), qcost, a, b, cones, settings)
    sol = solver.solve()
    opened = tuple(int(i) for i in np.flatnonzero(~case.closed))
    if str(sol.status) not in ("Solved", "AlmostSolved"):
        return FlexResult.infeasible(
            case.p_load, case.q_load, opened,
            f"no demand within the flexible ranges meets the limits ({sol.status})",
            time.perf_counter() - t0)
    xs = np.asarray(sol.x)
    p = case.p_load.copy()
    q = case.q_load.copy()
    # an interior-point solution may sit a hair outside a bound: put it back inside
    p[fidx] = np.clip(xs[iPF:iPF + nf], pmin, pmax)
    q[fidx] = np.clip(xs[iQF:iQF + nf], qmin, qmax)
    # deviations at the solver's tolerance are no decision: snap them to the base demand
    tiny = 1e-6 * max(float(np.max(np.abs(case.p_load))), 1e-12)
    p = np.where(np.abs(p - case.p_load) < tiny, case.p_load, p)
    q = np.where(np.abs(q - case.q_load) < tiny, case.q_load, q)
    relax_loss = float(np.sum(r * xs[iL:iL + m])) * base
    found = _checked(case, c_loss, c_flex, p, q, opened, relax_loss, time.perf_counter() - t0,
                     vmin)
    # never recommend more than doing nothing costs
    idle = _checked(case, c_loss, c_flex, case.p_load, case.q_load, opened, relax_loss,
                    time.perf_counter() - t0, vmin)
    return idle if idle.feasible and idle.cost <= found.cost else found


def _checked(case: Case, c_loss: float, c_flex: float, p: Floats, q: Floats, opened: tuple[int, ...],
             relax_loss: float, elapsed: float, vmin: float | None, solved: int = 1) -> FlexResult:
    """Re-solve with the exact load flow at demands (p, q) and report its figures."""
    fl = solve_radial(case.with_loads(p, q))
    base = case.base_mva * 1e3
    used_p = float(np.sum(np.abs(p - case.p_load))) * base
    used_q = float(np.sum(np.abs(q - case.q_load))) * base
    weighted = sum(fb.cost * (abs(p[fb.bus] - case.p_load[fb.bus]) + abs(q[fb.bus] - case.q_load[fb.bus]))
                   for fb in case.flex) * base
    if not fl.converged:
        return FlexResult.infeasible(p, q, opened, "the optimum does not solve in the exact "
                                     "load flow", elapsed, solved, flex_used_kw=used_p,
                                     flex_used_kvar=used_q, flow=fl, relaxation_loss_kw=relax_loss)
    lo = case.vmin if vmin is None else np.full(case.n_bus, vmin)
    ok = bool(np.all(fl.vm >= lo - 1e-6))
    cost = c_loss * fl.loss_kw + c_flex * weighted
    return FlexResult(feasible=ok, cost=cost, loss_kw=fl.loss_kw, flex_used_kw=used_p,
                      flex_used_kvar=used_q, p_load=p, q_load=q, open_branches=opened, flow=fl,
                      relaxation_loss_kw=relax_loss, elapsed_s=elapsed,
                      configurations_solved=solved,
                      message="" if ok else "the exact load flow puts a voltage below its limit")


def solve_joint(case: Case, c_loss: float, c_flex: float, vmin: float | None = None
                ) -> FlexResult:
    """Flexible buses and reconfiguration together: the global optimum over every radial
    configuration, with cone programs only where a configuration's bound can still win."""
    t0 = time.perf_counter()
    open_sets = enumerate_radial(case)
    fidx, pmin, _, qmin, _ = _flex_arrays(case)
    p_low, q_low = case.p_load.copy(), case.q_load.copy()
    p_low[fidx], q_low[fidx] = pmin, qmin
    low = batch.evaluate(case.with_loads(p_low, q_low), open_sets)
    bound = np.where(low.converged, c_loss * low.loss_pu * case.base_mva * 1e3, np.inf)
    order = np.argsort(bound)
    best: FlexResult | None = None
    solved = 0
    for i in order:
        if not np.isfinite(bound[i]) or (best is not None and bound[i] >= best.cost):
            break
        cand = case.with_open(list(open_sets[i]))
        try:
            res = solve_flex(cand, c_loss, c_flex, vmin)
        except CaseError:
            continue
        solved += 1
        if res.feasible and (best is None or res.cost < best.cost):
            best = res
    elapsed = time.perf_counter() - t0
    if best is None:
        return FlexResult.infeasible(case.p_load, case.q_load, (),
                                     "no radial configuration meets the limits", elapsed, solved)
    return replace(best, elapsed_s=elapsed, configurations_solved=solved)
