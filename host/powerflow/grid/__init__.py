"""Power-flow engine: case data, load flow, reconfiguration, flexible-bus optimisation.

The public API, in the order a study uses it (each imported on first use, so `flow` does not
pay for the optimisers)::

    from powerflow import grid

    case, source = grid.load("pandapower:mv_oberrhein")  # or ieee33, FILE.m, FILE.json
    flow = grid.solve(case)                       # FlowResult: .vm, .loss_kw, .vmin_pu
    best = grid.reconfigure(case, time_limit=30)  # ReconfigResult: .best, .optimality_gap
    net = grid.write_net(source.net, source.map, case, best.best.open_branches)
    day = grid.plan_day(case, grid.read_profiles("day.csv", case, source), 5.0)
    opt = grid.solve_flex(grid.builtin("ieee33"), c_loss=1.0, c_flex=0.5)

Units: p.u. on the case's base inside a `Case`; kW, kvar and kWh in results.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Case": "powerflow.grid.case", "CaseError": "powerflow.grid.case",
    "load": "powerflow.grid.cases", "load_case": "powerflow.grid.cases",
    "builtin": "powerflow.grid.cases", "with_flex": "powerflow.grid.cases",
    "NetSource": "powerflow.grid.cases",
    "solve": "powerflow.grid.loadflow", "FlowResult": "powerflow.grid.loadflow",
    "reconfigure": "powerflow.grid.reconfiguration", "ReconfigResult": "powerflow.grid.reconfiguration",
    "solve_flex": "powerflow.grid.flex", "solve_joint": "powerflow.grid.flex",
    "from_pandapower": "powerflow.grid.pandapower_io", "write_net": "powerflow.grid.pandapower_io",
    "load_net": "powerflow.grid.pandapower_io",
    "plan_day": "powerflow.grid.day", "read_profiles": "powerflow.grid.day",
    "DayPlan": "powerflow.grid.day",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'powerflow.grid' has no attribute {name!r}")
