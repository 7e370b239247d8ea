"""The rack's DC mesh as the allocator sees it, and its exact load flow.

Buses are the mesh segments. A converter that is on is a voltage source `vref`
behind its droop resistance `r_out` (the firmware's droop is set equal to the
power stage's, so this is what the node does in steady state), sourcing current
only. Devices are constant-power loads. Units SI: V, A, W, ohm; a converter's
current is positive when it sources power.

`flow` is the exact (nonlinear) load flow of a given set of converter setpoints:
what the rack will do. `realise` is its inverse: the setpoints that make the
converters deliver chosen powers, one converter per island holding the voltage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from powerflow.model.arrays import Bools, Floats, Ints
from powerflow.model.mesh import MeshIndex, islands, laplacian
from powerflow.model.rack import Rack


@dataclass(frozen=True)
class DcNetwork:
    """Topology and parameters of a rack's mesh (from its rack file)."""

    nseg: int
    bf: Ints  # branch from-segment index
    bt: Ints  # branch to-segment index
    br: Floats  # branch resistance, ohm
    conv_seg: Ints  # converter -> segment index
    r_out: Floats  # converter droop resistance, ohm
    v_nom: float  # V

    @classmethod
    def of(cls, rack: Rack) -> DcNetwork:
        m = MeshIndex.of(rack)
        return cls(nseg=m.nseg, bf=m.branch_from, bt=m.branch_to, br=m.branch_r,
                   conv_seg=m.node_seg,
                   r_out=np.array([max(n.r_out, 1e-5) for n in rack.nodes], float),
                   v_nom=rack.bus_voltage)

    def conductance(self, closed: Bools) -> Floats:
        """Segment conductance (Laplacian) matrix, S, for the given branch states."""
        y = np.where(closed, 1.0 / self.br, 0.0)
        return laplacian(self.nseg, self.bf, self.bt, y)

    def islands(self, closed: Bools) -> Ints:
        """Island label of each segment (the lowest segment index of its island)."""
        return islands(self.nseg, self.bf, self.bt, closed)


@dataclass
class DcFlow:
    """One operating point of the mesh."""

    converged: bool
    v: Floats  # segment voltages, V
    i_conv: Floats  # converter output currents, A (0 when off)
    i_branch: Floats  # branch currents from -> to, A
    loss_dist_w: float  # W lost in the mesh's branches
    p_conv: Floats  # converter output powers, W


def _finish(net: DcNetwork, closed: Bools, v: Floats, i_conv: Floats, ok: bool) -> DcFlow:
    i_br = np.where(closed, (v[net.bf] - v[net.bt]) / net.br, 0.0)
    return DcFlow(ok, v, i_conv, i_br, float(np.sum(i_br * i_br * net.br)),
                  i_conv * v[net.conv_seg])


def flow(net: DcNetwork, closed: Bools, vref: Floats, p_load: Floats, iters: int = 40) -> DcFlow:
    """Exact load flow: converters at `vref` (V; NaN = off) behind r_out, constant-power
    loads `p_load` (W per segment). Newton's method from the converters' setpoints,
    which lands on the high-voltage (stable) operating point. A segment not reached by
    any converter that is on does not converge."""
    on = ~np.isnan(vref)
    g = net.conductance(closed)
    # start just below the lowest setpoint, where every converter conducts
    v = np.full(net.nseg, 0.995 * float(np.nanmin(vref)) if on.any() else net.v_nom)
    seg, r = net.conv_seg[on], net.r_out[on]
    vr = vref[on]
    ok = False
    for _ in range(iters):
        x = vr - v[seg]
        cond = x > 0  # the ORing stage blocks reverse current
        i = np.where(cond, x / r, 0.0)
        res = g @ v + p_load / np.maximum(v, 1e-3)
        np.add.at(res, seg, -i)
        jac = g - np.diag(p_load / np.maximum(v, 1e-3) ** 2)
        np.add.at(jac, (seg, seg), np.where(cond, 1.0 / r, 0.0))
        try:
            dv = np.linalg.solve(jac, -res)
        except np.linalg.LinAlgError:
            break
        step = float(np.max(np.abs(dv)))
        v = v + (dv * (0.05 * net.v_nom / step) if step > 0.05 * net.v_nom else dv)
        if not np.all(np.isfinite(v)) or np.any(v <= 0.3 * net.v_nom):
            break
        if step < 1e-9:
            ok = True
            break
    i_conv = np.zeros(len(vref))
    if np.all(np.isfinite(v)):
        i_conv[on] = np.maximum(vref[on] - v[seg], 0.0) / r
    return _finish(net, closed, v, i_conv, ok)


def realise(net: DcNetwork, closed: Bools, on: Bools, p_want: Floats, p_load: Floats, v_hold: float,
            iters: int = 40) -> tuple[Floats, DcFlow] | None:
    """Setpoints (V per converter, NaN = off) that make each converter that is on deliver
    `p_want` (W), except one per island (its largest) which holds its segment at `v_hold`
    (V) and takes up the mesh's losses. None if an island with load has no converter on or
    the holding converter would have to sink current."""
    isl = net.islands(closed)
    ref_seg = np.full(net.nseg, -1)
    holder = {}
    for k in np.argsort(-p_want):
        if on[k] and int(isl[net.conv_seg[k]]) not in holder:
            holder[int(isl[net.conv_seg[k]])] = int(k)
    for s in range(net.nseg):
        if int(isl[s]) not in holder:
            if p_load[s] > 0:
                return None
            continue
        ref_seg[s] = net.conv_seg[holder[int(isl[s])]]
    fixed = np.zeros(net.nseg, bool)
    for k in holder.values():
        fixed[net.conv_seg[k]] = True
    free = ~fixed & (ref_seg >= 0)
    g = net.conductance(closed)
    injected = np.zeros(net.nseg)  # W from converters that are not holders
    others = on.copy()
    others[list(holder.values())] = False
    np.add.at(injected, net.conv_seg[others], p_want[others])
    v = np.full(net.nseg, v_hold)
    ok = False
    for _ in range(iters):
        vs = np.maximum(v, 1e-3)
        res = g @ v + (p_load - injected) / vs
        jac = g - np.diag((p_load - injected) / vs ** 2)
        sub = np.ix_(free, free)
        if not free.any():
            ok = True
            break
        dv = np.linalg.solve(jac[sub], -res[free])
        v[free] += dv
        if float(np.max(np.abs(dv))) < 1e-10:
            ok = True
            break
    if not ok or np.any(v[ref_seg >= 0] <= 0.5 * v_hold):
        return None
    i_conv = np.zeros(len(on))
    i_conv[others] = p_want[others] / v[net.conv_seg[others]]
    # each holder supplies what its segment still lacks
    resid = g @ v + p_load / v
    np.add.at(resid, net.conv_seg[others], -i_conv[others])
    for k in holder.values():
        i_conv[k] = resid[net.conv_seg[k]]
        if i_conv[k] < 0:
            return None
    vref = np.full(len(on), np.nan)
    vref[on] = v[net.conv_seg[on]] + net.r_out[on] * i_conv[on]
    return vref, _finish(net, closed, v, i_conv, True)
