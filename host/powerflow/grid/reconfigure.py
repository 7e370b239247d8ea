"""Network reconfiguration: the radial configuration of least loss under voltage limits.

Small networks are solved exactly by enumeration (every radial configuration,
evaluated in one batch); networks with too many configurations go to a
mixed-integer convex branch-flow model (`powerflow.grid.misocp`), which reports
its optimality gap. Either way every configuration returned has been solved
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
                time_limit: float = 60.0) -> ReconfigResult:
    """Least-loss radial configuration, with `vmin` (p.u.) as a lower voltage limit if given.

    `method`: "enumerate", "misocp", or "auto" (enumerate when feasible).
    """
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
    if method == "misocp":
        from powerflow.grid.misocp import reconfigure_misocp

        return reconfigure_misocp(case, vmin=vmin, time_limit=time_limit, total=total, t0=t0)
    if method != "enumerate":
        raise ValueError(f"unknown method {method!r} (auto, enumerate, misocp)")
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
