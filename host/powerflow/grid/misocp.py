"""The reconfiguration model (`powerflow.grid.branchflow`) as one mixed-integer SOCP for
SCIP: the same arcs, bounds and perspective loss terms as the Clarabel relaxation that
`powerflow.grid.branch_and_bound` branches on, handed to a general solver instead.

Kept beside our own search as the independent check and the reference in the bench.
SCIP's optimisation-based bound tightening is switched off (on case118zh it spent 24 of
28 s there without moving the bound), and so are its primal heuristics: the incumbent
comes from branch exchange, and SCIP is given its value as a cutoff.
"""

from __future__ import annotations

import time

from pyscipopt import SCIP_PARAMSETTING, Model, Variable, quicksum

from powerflow.grid.branch_and_bound import SearchOutcome
from powerflow.grid.branchflow import BranchFlowData, branchflow_data
from powerflow.grid.case import Case
from powerflow.grid.loadflow import FlowResult, solve_radial


def build_model(d: BranchFlowData) -> tuple[Model, list[Variable | float]]:
    """SCIP model of `d`; returns it and each arc's activity (a variable, or 1.0 if fixed)."""
    m = Model("reconfiguration")
    m.hideOutput()
    w = [m.addVar(f"w{i}", lb=d.w_lo, ub=d.w_hi) for i in range(d.n_node)]
    m.fixVar(w[0], d.w_feed)
    big = d.w_hi - d.w_lo
    loads_only = d.loads_only
    acts: list[Variable | float] = []
    Ps, Qs, Ls = [], [], []
    for k in range(d.n_arc):
        t, h, r, x = int(d.arc_tail[k]), int(d.arc_head[k]), float(d.r[k]), float(d.x[k])
        P = m.addVar(f"P{k}", lb=-d.p_max, ub=d.p_max)
        Q = m.addVar(f"Q{k}", lb=-d.q_max, ub=d.q_max)
        L = m.addVar(f"l{k}", lb=0.0, ub=d.l_max)
        drop = w[h] - w[t] + 2 * (r * P + x * Q) - (r * r + x * x) * L
        if d.arc_fixed[k]:
            a: Variable | float = 1.0
            m.addCons(drop == 0)
            m.addCons(P * P + Q * Q <= w[t] * L)
        else:
            a = av = m.addVar(f"a{k}", vtype="B")
            m.addCons(P <= d.p_max * av)
            m.addCons(P >= -d.p_max * av)
            m.addCons(Q <= d.q_max * av)
            m.addCons(Q >= -d.q_max * av)
            m.addCons(L <= d.l_max * av)
            m.addCons(drop <= big * (1 - av))
            m.addCons(drop >= -big * (1 - av))
            s = m.addVar(f"s{k}", lb=0.0, ub=d.w_hi)
            m.addCons(s <= d.w_hi * av)
            m.addCons(s <= w[t] - d.w_lo * (1 - av))
            m.addCons(P * P + Q * Q <= s * L)
        if loads_only:  # delivers at least the head's load when active (branchflow)
            m.addCons(P - r * L >= float(d.p[h]) * a)
            m.addCons(Q - x * L >= float(d.q[h]) * a)
        acts.append(a)
        Ps.append(P)
        Qs.append(Q)
        Ls.append(L)
    arcs_of = d.arcs_by_branch()
    closed = {b: quicksum(acts[k] for k in ks) for b, ks in arcs_of.items()}
    for ks in arcs_of.values():
        if len(ks) == 2:  # a branch is closed in one direction at most
            m.addCons(acts[ks[0]] + acts[ks[1]] <= 1)
    for i in range(d.n_node):
        ks = d.into(i).tolist()
        if ks:
            m.addCons(quicksum(acts[k] for k in ks) == (0 if i == 0 else 1))
    m.addCons(quicksum(acts) == d.n_node - 1)
    for members in d.cycles:
        m.addCons(quicksum(closed[int(b)] for b in members) <= len(members) - 1)
    for i in range(1, d.n_node):
        ins, outs = d.into(i).tolist(), [int(k) for k in (d.arc_tail == i).nonzero()[0]]
        m.addCons(quicksum(Ps[k] - d.r[k] * Ls[k] for k in ins) - quicksum(Ps[k] for k in outs)
                  == float(d.p[i]))
        m.addCons(quicksum(Qs[k] - d.x[k] * Ls[k] for k in ins) - quicksum(Qs[k] for k in outs)
                  == float(d.q[i]))
    m.setObjective(quicksum(float(d.r[k]) * Ls[k] for k in range(d.n_arc)), "minimize")
    return m, acts


def solve_scip(case: Case, start: tuple[int, ...] | None, vmin: float | None = None,
               time_limit: float = 60.0, gap: float = 1e-3) -> SearchOutcome:
    """The same search as `branch_and_bound`, by SCIP."""
    t0 = time.perf_counter()
    d = branchflow_data(case, vmin)
    candidates: list[tuple[int, ...]] = [start] if start is not None else []
    m, acts = build_model(d)
    m.setHeuristics(SCIP_PARAMSETTING.OFF)
    m.setParam("propagating/obbt/freq", -1)
    m.setParam("limits/gap", gap)
    m.setParam("limits/time", max(1.0, time_limit - (time.perf_counter() - t0)))
    if start is not None:
        fl = solve_radial(case.with_open(list(start)))
        if fl.converged:
            m.setObjlimit(float(fl.loss.real) * (1 + 1e-7))
    m.optimize()
    if m.getNSols() > 0:
        sol = m.getBestSol()
        on = {int(d.arc_branch[k]) for k, a in enumerate(acts)
              if not isinstance(a, Variable) or m.getSolVal(sol, a) > 0.5}
        candidates.append(tuple(b for b in range(case.n_branch) if b not in on))
    best: tuple[tuple[int, ...], FlowResult] | None = None
    for opened in candidates:
        fl = solve_radial(case.with_open(list(opened)))
        if fl.converged and (vmin is None or fl.vmin_pu >= vmin - 1e-9) and \
                (best is None or fl.loss.real < best[1].loss.real):
            best = (opened, fl)
    bound = m.getDualbound() if m.getStatus() != "infeasible" else float("inf")
    if best is not None:
        bound = min(bound, float(best[1].loss.real))
    return SearchOutcome(best[0] if best else None, best[1] if best else None,
                         bound * d.base_kw, int(m.getNNodes()), len(candidates),
                         m.getStatus() in ("optimal", "gaplimit", "infeasible"))
