"""A rack file as a DC load-flow case.

Buses: one per mesh segment, plus a virtual source bus (the slack) at the bus
voltage. Each converter node is a branch from the source to its segment through
its output (droop) resistance: converters with equal setpoints share current as
their droop makes them, which is what the mesh does when the host holds every
setpoint equal. Mesh branches keep their resistance and tie state; devices are
constant-power loads at their nominal power. Per unit on 1 kW and the bus voltage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from powerflow.grid.case import Case, CaseError
from powerflow.model.mesh import MeshIndex
from powerflow.model.rack import Rack, RackError, load_rack

BASE_MVA = 1e-3  # 1 kW


def rack_case(rack: Rack) -> Case:
    mesh = MeshIndex.of(rack)
    n = mesh.nseg + 1  # bus 0 is the virtual source
    idx = {s: k + 1 for s, k in mesh.segment.items()}
    zbase = (rack.bus_voltage ** 2) / (BASE_MVA * 1e6)
    p = np.zeros(n)
    for dv in rack.devices:
        p[idx[dv.segment]] += dv.p_nom_w / (BASE_MVA * 1e6)
    f, t, r, closed, switchable = [], [], [], [], []
    for node in rack.nodes:
        f.append(0)
        t.append(idx[node.segment])
        r.append(max(node.r_out, 1e-6) / zbase)
        closed.append(True)
        switchable.append(False)  # a converter on or off is the allocator's choice, not a switch
    for br in rack.branches:
        f.append(idx[br.from_])
        t.append(idx[br.to])
        r.append(br.r / zbase)
        closed.append(br.closed)
        switchable.append(br.switch == "tie")
    m = len(f)
    return Case(name=rack.name, base_mva=BASE_MVA, base_kv=rack.bus_voltage / 1000.0,
                bus_ids=np.arange(n, dtype=np.int64), slack=np.array([0]),
                v_slack=np.array([1.0]), p_load=p, q_load=np.zeros(n), f=np.array(f),
                t=np.array(t), r=np.array(r), x=np.zeros(m), closed=np.array(closed),
                switchable=np.array(switchable), vmin=np.full(n, 0.9),
                vmax=np.full(n, 1.1)).validate()


def load_rack_case(path: str | Path) -> Case:
    try:
        return rack_case(load_rack(path))
    except RackError as e:
        raise CaseError(str(e)) from None
