"""Network reconfiguration: the radial configuration of least loss under voltage limits.

Small networks are solved exactly by enumeration (every radial configuration,
evaluated in one batch); networks with too many configurations go to the
mixed-integer convex branch-flow model (`powerflow.grid.branchflow`), searched by our
branch-and-bound on Clarabel relaxations (`powerflow.grid.branch_and_bound`, method
"misocp") or by SCIP (`powerflow.grid.misocp`, method "scip"), which report the
optimality gap they proved. Either way every configuration returned has been solved
again with the exact load flow, and its figures are that load flow's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from powerflow.grid import batch
from powerflow.grid.case import Case, CaseError
from powerflow.grid.loadflow import FlowResult, solve_radial
from powerflow.grid.topology import count_radial, enumerate_radial

ENUMERATION_LIMIT = 5_000_000  # candidate open-branch sets we are willing to test


@dataclass(frozen=True)
class Configuration:
    open_branches: tuple[int, ...]  # 0-based branch indices
    flow: FlowResult

    @property
    def loss_kw(self) -> float:
        return self.flow.loss_kw

    @property
    def vmin_pu(self) -> float:
        return self.flow.vmin_pu


@dataclass(frozen=True)
class ReconfigResult:
    best: Configuration | None  # None when no configuration meets the limits
    top: list[Configuration]
    radial_configurations: int
    evaluated: int
    solved: int  # configurations with a load-flow solution
    optimality_gap: float  # 0 for enumeration
    method: str
    elapsed_s: float
    message: str = ""
    extra: dict[str, float] = field(default_factory=dict)


def exact(case: Case, open_branches: tuple[int, ...]) -> FlowResult:
    return solve_radial(case.with_open(list(open_branches)))


def reconfigure(case: Case, top_k: int = 5, vmin: float | None = None, method: str = "auto",
                time_limit: float = 60.0, gap: float = 1e-3) -> ReconfigResult:
    """Least-loss radial configuration, with `vmin` (p.u.) as a lower voltage limit if given.

    `method`: "enumerate", "misocp" (branch-and-bound), "scip", "exchange" (branch
    exchange from several starts: a local optimum, no proved gap), or "auto" (enumerate
    when feasible, else "misocp"). The searches stop once the optimality gap
    they prove is at most `gap` (a fraction: 1e-3 is 0.1 %) or after `time_limit` (s).
    """
    if not 0.0 <= gap < 1.0:
        raise ValueError(f"gap {gap} must be a fraction in [0, 1)")
    t0 = time.perf_counter()
    total = count_radial(case)
    if method == "auto":
        try:
            open_sets = enumerate_radial(case, ENUMERATION_LIMIT)
            method = "enumerate"
        except CaseError:
            method = "misocp"
    elif method == "enumerate":
        open_sets = enumerate_radial(case, ENUMERATION_LIMIT)
    if method == "scip" and not case.plain:
        raise CaseError(f"{case.name}: the SCIP model does not have transformers and line "
                        "charging; use misocp (PowerFlow's branch-and-bound has them)")
    if method in ("misocp", "scip"):
        return _optimise(case, method, vmin, time_limit, gap, total, t0)
    if method == "exchange":
        return _exchange(case, vmin, total, t0)
    if method != "enumerate":
        raise ValueError(f"unknown method {method!r} (auto, enumerate, misocp, scip, exchange)")
    res = batch.evaluate(case, open_sets)
    score = res.loss_pu.copy()
    if vmin is not None:
        score[~(res.vmin_pu >= vmin - 1e-9)] = np.nan
    ranked = np.argsort(np.where(np.isnan(score), np.inf, score))
    ranked = ranked[: np.count_nonzero(np.isfinite(score))]
    top: list[Configuration] = []
    for i in ranked[: max(top_k, 1) + 5]:
        ob = tuple(int(b) for b in open_sets[i])
        fl = exact(case, ob)
        if fl.converged and (vmin is None or fl.vmin_pu >= vmin - 1e-9):
            top.append(Configuration(ob, fl))
        if len(top) == max(top_k, 1):
            break
    top.sort(key=lambda c: c.loss_kw)
    msg = "" if top else (f"no radial configuration keeps every voltage at or above {vmin} p.u."
                          if vmin is not None else "no radial configuration has a load-flow solution")
    return ReconfigResult(top[0] if top else None, top, total, len(open_sets),
                          int(res.converged.sum()), 0.0, "enumeration", time.perf_counter() - t0, msg)


def _exchange(case: Case, vmin: float | None, total: int, t0: float) -> ReconfigResult:
    """Branch exchange from the case's configuration and four random ones: a local
    optimum, its gap not proved (reported as infinite)."""
    from powerflow.grid.exchange import search

    start, _, evaluated = search(case, starts=4, vmin=vmin)
    ob = tuple(int(b) for b in start)
    fl = exact(case, ob)
    elapsed = time.perf_counter() - t0
    if not fl.converged or (vmin is not None and fl.vmin_pu < vmin - 1e-9):
        return ReconfigResult(None, [], total, evaluated, 0, float("inf"), "branch-exchange",
                              elapsed, "no radial configuration found that meets the limits")
    best = Configuration(ob, fl)
    return ReconfigResult(best, [best], total, evaluated, evaluated, float("inf"),
                          "branch-exchange", elapsed,
                          "a local optimum of branch exchange: no optimality gap proved")


def _optimise(case: Case, method: str, vmin: float | None, time_limit: float, gap: float,
              total: int, t0: float) -> ReconfigResult:
    from powerflow.grid.branch_and_bound import branch_and_bound
    from powerflow.grid.exchange import search

    # a strong incumbent first: it prunes the search from the start
    start, _, evaluated = search(case, starts=4, vmin=vmin)
    left = time_limit - (time.perf_counter() - t0)
    if method == "scip":
        from powerflow.grid.misocp import solve_scip

        out = solve_scip(case, tuple(int(b) for b in start), vmin, left, gap)
    else:
        out = branch_and_bound(case, tuple(int(b) for b in start), vmin, left, gap)
    elapsed = time.perf_counter() - t0
    extra = {"lower_bound_kw": out.lower_bound_kw, "nodes": float(out.nodes),
             "proved_optimal": 1.0 if out.proved else 0.0}
    label = "misocp-branch-and-bound" if method == "misocp" else "misocp-scip"
    if out.open_branches is None or out.flow is None:
        return ReconfigResult(None, [], total, evaluated + out.nodes, 0, float("inf"), label,
                              elapsed, "no radial configuration meets the limits", extra)
    best = Configuration(out.open_branches, out.flow)
    proved = max(0.0, (best.loss_kw - out.lower_bound_kw) / best.loss_kw) if best.loss_kw else 0.0
    return ReconfigResult(best, [best], total, evaluated + out.nodes, out.configurations_checked,
                          proved, label, elapsed, "", extra)
