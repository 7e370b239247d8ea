"""Cases to and from pandapower networks (lines, loads, static generators, external grids).

`from_pandapower` is the pandapower loader of the engine; `to_pandapower` gives the
tests an independent solver to hold ours against.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from powerflow.grid.case import Case, CaseError


def from_pandapower(net: Any, name: str = "pandapower") -> Case:
    """A Case from a pandapower net with one voltage level. Lines out of service become
    open branches (ties); transformers and switches are refused with a clear error."""
    if len(net.trafo) or len(getattr(net, "trafo3w", [])):
        raise CaseError(f"{name}: transformers are not supported")
    if len(net.switch):
        raise CaseError(f"{name}: pandapower switches are not supported; use in_service on lines")
    kv = net.bus.vn_kv.unique()
    if len(kv) != 1:
        raise CaseError(f"{name}: buses at several voltage levels ({sorted(kv)})")
    base_kv = float(kv[0])
    base_mva = float(net.sn_mva)
    zbase = base_kv ** 2 / base_mva
    ids = net.bus.index.to_numpy()
    pos = {int(b): i for i, b in enumerate(ids)}
    p = np.zeros(len(ids))
    q = np.zeros(len(ids))
    for _, ld in net.load[net.load.in_service].iterrows():
        p[pos[int(ld.bus)]] += ld.p_mw * ld.scaling / base_mva
        q[pos[int(ld.bus)]] += ld.q_mvar * ld.scaling / base_mva
    for _, sg in net.sgen[net.sgen.in_service].iterrows():
        p[pos[int(sg.bus)]] -= sg.p_mw * sg.scaling / base_mva
        q[pos[int(sg.bus)]] -= sg.q_mvar * sg.scaling / base_mva
    eg = net.ext_grid[net.ext_grid.in_service]
    if len(eg) == 0:
        raise CaseError(f"{name}: no external grid (slack)")
    ln = net.line
    length = ln.length_km.to_numpy() / ln.parallel.to_numpy()
    return Case(
        name=name, base_mva=base_mva, base_kv=base_kv, bus_ids=ids.astype(np.int64) + 1,
        slack=np.array([pos[int(b)] for b in eg.bus], np.int64), v_slack=eg.vm_pu.to_numpy(float),
        p_load=p, q_load=q,
        f=np.array([pos[int(b)] for b in ln.from_bus], np.int64),
        t=np.array([pos[int(b)] for b in ln.to_bus], np.int64),
        r=ln.r_ohm_per_km.to_numpy() * length / zbase, x=ln.x_ohm_per_km.to_numpy() * length / zbase,
        closed=ln.in_service.to_numpy(bool), switchable=np.ones(len(ln), bool),
        vmin=np.full(len(ids), 0.9), vmax=np.full(len(ids), 1.1),
    ).validate()


def to_pandapower(case: Case) -> Any:
    """A pandapower net with the case's buses, loads, feeds and branches (open = out of service)."""
    import pandapower as pp

    net = pp.create_empty_network(sn_mva=case.base_mva)
    zbase = case.base_kv ** 2 / case.base_mva
    for b in case.bus_ids:
        pp.create_bus(net, vn_kv=case.base_kv, name=str(int(b)))
    for s, v in zip(case.slack, case.v_slack, strict=True):
        pp.create_ext_grid(net, bus=int(s), vm_pu=float(v), va_degree=0.0)
    for i in np.flatnonzero((case.p_load != 0) | (case.q_load != 0)):
        pp.create_load(net, bus=int(i), p_mw=float(case.p_load[i] * case.base_mva),
                       q_mvar=float(case.q_load[i] * case.base_mva))
    for k in range(case.n_branch):
        pp.create_line_from_parameters(
            net, int(case.f[k]), int(case.t[k]), length_km=1.0, r_ohm_per_km=float(case.r[k] * zbase),
            x_ohm_per_km=float(case.x[k] * zbase), c_nf_per_km=0.0, max_i_ka=1e6,
            in_service=bool(case.closed[k]))
    return net
