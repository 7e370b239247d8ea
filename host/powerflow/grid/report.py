"""JSON-ready reports of the power-flow results (the CLI's `--json` and the API use these)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the types only: `flow` and `reconfigure` need not import the flex solver
    from powerflow.grid.flex import FlexResult
    from powerflow.grid.loadflow import FlowResult
    from powerflow.grid.reconfiguration import ReconfigResult


def flow_report(r: FlowResult) -> dict[str, Any]:
    c = r.case
    out: dict[str, Any] = {"case": c.name, "converged": r.converged, "method": r.method,
                           "iterations": r.iterations}
    if not r.converged:
        out["message"] = r.message
        return out
    out.update({
        "loss_kw": r.loss_kw, "loss_kvar": r.loss_kvar, **_lines_loss(r), "vmin_pu": r.vmin_pu,
        "vmin_bus": r.vmin_bus,
        "open_branches": [int(b) + 1 for b in np.flatnonzero(~c.closed)],
        "voltages_pu": {str(int(b)): float(v) for b, v in zip(c.bus_ids, r.vm, strict=True)},
    })
    return out


def _lines_loss(r: FlowResult) -> dict[str, float]:
    """On a case whose branches are labelled (a pandapower net): the lines' losses alone
    (kW), beside the total that includes the transformers'."""
    c = r.case
    if not c.labels:
        return {}
    lines = np.array([lab.startswith("line ") for lab in c.labels])
    return {"loss_lines_kw": float(r.branch_losses().real[lines].sum() * c.base_mva * 1e3)}


def reconfig_report(r: ReconfigResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "method": r.method, "radial_configurations": r.radial_configurations,
        "evaluated": r.evaluated, "solved": r.solved,
        # not proved (a heuristic's answer): null
        "optimality_gap": r.optimality_gap if np.isfinite(r.optimality_gap) else None,
        "elapsed_s": r.elapsed_s,
    }
    if r.best is None:
        out["message"] = r.message
        out["open_branches"] = None
        return out
    out.update({
        "open_branches": [b + 1 for b in r.best.open_branches], "loss_kw": r.best.loss_kw,
        **_lines_loss(r.best.flow),
        "vmin_pu": r.best.vmin_pu, "vmin_bus": r.best.flow.vmin_bus,
        "top": [{"open_branches": [b + 1 for b in c.open_branches], "loss_kw": c.loss_kw,
                 "vmin_pu": c.vmin_pu} for c in r.top],
    })
    out.update({k: v for k, v in r.extra.items()})
    if r.message:
        out["message"] = r.message
    return out


def flex_report(r: FlexResult, case_name: str) -> dict[str, Any]:
    out: dict[str, Any] = {"case": case_name, "feasible": r.feasible,
                           "elapsed_s": r.elapsed_s,
                           "configurations_solved": r.configurations_solved}
    if r.flow is None or not r.flow.converged:
        out["message"] = r.message
        return out
    c = r.flow.case
    base = c.base_mva * 1e3
    adj = {}
    for fb in c.flex:
        bus = str(int(c.bus_ids[fb.bus]))
        adj[bus] = {"p_kw": float(r.p_load[fb.bus] * base), "q_kvar": float(r.q_load[fb.bus] * base),
                    "dp_kw": float((r.p_load[fb.bus] - fb.p_base) * base),
                    "dq_kvar": float((r.q_load[fb.bus] - fb.q_base) * base),
                    "cost_weight": fb.cost}
    out.update({
        "cost": r.cost, "loss_kw": r.loss_kw, "flex_used_kw": r.flex_used_kw,
        "flex_used_kvar": r.flex_used_kvar, "open_branches": [b + 1 for b in r.open_branches],
        "vmin_pu": r.flow.vmin_pu, "vmin_bus": r.flow.vmin_bus, "adjustments": adj,
        "relaxation_gap": r.relaxation_gap,
    })
    if r.message:
        out["message"] = r.message
    return out
