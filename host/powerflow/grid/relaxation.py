"""The continuous (second-order cone) relaxation of the reconfiguration model, solved by
Clarabel, with any arcs' activities fixed: the bound of one branch-and-bound node.

Relaxing a in [0, 1] alone would let a half-active arc carry half the flow at a quarter
of the loss. The loss of each switchable arc is therefore written in perspective:
P^2 + Q^2 <= s l with s <= w_hi a and s <= w_tail - w_lo (1 - a) (the McCormick
envelope of a w_tail), so that splitting a flow over fractional arcs saves nothing
locally. Voltage drops on switchable arcs hold only when active (big-M on w_hi - w_lo).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import clarabel
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from powerflow.grid.branchflow import BranchFlowData

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class NodeBound:
    status: str  # "solved", "infeasible" or "failed"
    bound_pu: float  # a lower bound on the losses of every configuration in the node, p.u.
    activity: Floats  # a per arc in the relaxed optimum
    flow: Floats  # |P| per arc in the relaxed optimum, p.u.


class _Rows:
    """Sparse rows of A x (<= or ==) b, assembled once."""

    def __init__(self) -> None:
        self.r: list[int] = []
        self.c: list[int] = []
        self.v: list[float] = []
        self.b: list[float] = []

    def add(self, coefs: Mapping[int, float], rhs: float) -> int:
        i = len(self.b)
        for col, val in coefs.items():
            self.r.append(i)
            self.c.append(int(col))
            self.v.append(float(val))
        self.b.append(float(rhs))
        return i


class Relaxation:
    """SOCP relaxation of `data`'s model. Build once; `solve(fixed)` per node."""

    def __init__(self, data: BranchFlowData) -> None:
        self.data = d = data
        na, nn = d.n_arc, d.n_node
        W = np.arange(nn)
        A = nn + np.arange(na)
        P, Q, L, S = A + na, A + 2 * na, A + 3 * na, A + 4 * na
        self._a, self._p = A, P
        nv = nn + 5 * na
        eq, le, cones = _Rows(), _Rows(), _Rows()
        eq.add({W[0]: 1.0}, d.w_feed)
        for i in range(nn):
            ks = d.into(i)
            if len(ks):
                eq.add({A[k]: 1.0 for k in ks}, 0.0 if i == 0 else 1.0)
        eq.add({A[k]: 1.0 for k in range(na)}, nn - 1.0)  # n - 1 closed branches
        for i in range(1, nn):
            for flow, imp, load in ((P, d.r, d.p[i]), (Q, d.x, d.q[i])):
                coef: dict[int, float] = {}
                for k in d.into(i):
                    coef[flow[k]] = coef.get(flow[k], 0.0) + 1.0
                    coef[L[k]] = coef.get(L[k], 0.0) - imp[k]
                for k in np.flatnonzero(d.arc_tail == i):
                    coef[flow[k]] = coef.get(flow[k], 0.0) - 1.0
                eq.add(coef, load)
        for i in range(nn):
            le.add({W[i]: 1.0}, d.w_hi)
            le.add({W[i]: -1.0}, -d.w_lo)
        big = d.w_hi - d.w_lo
        loads_only = d.loads_only
        self._lower_row: dict[int, int] = {}
        self._upper_row: dict[int, int] = {}
        for k in range(na):
            t, h, r, x = int(d.arc_tail[k]), int(d.arc_head[k]), d.r[k], d.x[k]
            drop = {W[h]: 1.0, W[t]: -1.0, P[k]: 2 * r, Q[k]: 2 * x, L[k]: -(r * r + x * x)}
            le.add({L[k]: -1.0}, 0.0)
            if loads_only:  # delivers at least the head's load when active (branchflow)
                le.add({P[k]: -1.0, L[k]: r, A[k]: d.p[h]}, 0.0)
                le.add({Q[k]: -1.0, L[k]: x, A[k]: d.q[h]}, 0.0)
            if d.arc_fixed[k]:
                eq.add({A[k]: 1.0}, 1.0)
                eq.add({S[k]: 1.0, W[t]: -1.0}, 0.0)
                eq.add(drop, 0.0)
            else:
                self._lower_row[k] = le.add({A[k]: -1.0}, 0.0)
                self._upper_row[k] = le.add({A[k]: 1.0}, 1.0)
                le.add({L[k]: 1.0, A[k]: -d.l_max}, 0.0)
                for var, bound in ((P[k], d.p_max), (Q[k], d.q_max)):
                    le.add({var: 1.0, A[k]: -bound}, 0.0)
                    le.add({var: -1.0, A[k]: -bound}, 0.0)
                for sign in (1.0, -1.0):
                    row = {c: sign * v for c, v in drop.items()}
                    row[A[k]] = big
                    le.add(row, big)
                le.add({S[k]: -1.0}, 0.0)
                le.add({S[k]: 1.0, A[k]: -d.w_hi}, 0.0)
                le.add({S[k]: 1.0, W[t]: -1.0, A[k]: -d.w_lo}, -d.w_lo)
            # rotated cone P^2 + Q^2 <= s l  as  ||(2P, 2Q, s - l)|| <= s + l
            cones.add({S[k]: -1.0, L[k]: -1.0}, 0.0)
            cones.add({P[k]: -2.0}, 0.0)
            cones.add({Q[k]: -2.0}, 0.0)
            cones.add({S[k]: -1.0, L[k]: 1.0}, 0.0)
        arcs_of = d.arcs_by_branch()
        for pair in arcs_of.values():  # a branch is closed in one direction at most
            if len(pair) == 2:
                le.add({A[k]: 1.0 for k in pair}, 1.0)
        for members in d.cycles:  # some branch of every loop is open
            le.add({A[k]: 1.0 for b in members.tolist() for k in arcs_of[b]}, len(members) - 1.0)
        rows = [eq, le, cones]
        offset = np.cumsum([0] + [len(g.b) for g in rows])
        self._le0 = int(offset[1])
        self.A = sp.csc_matrix((np.concatenate([g.v for g in rows]),
                                (np.concatenate([np.array(g.r, np.int64) + o
                                                 for g, o in zip(rows, offset)]),
                                 np.concatenate([g.c for g in rows]))), shape=(int(offset[-1]), nv))
        self.b = np.concatenate([g.b for g in rows])
        self.cones = [clarabel.ZeroConeT(len(eq.b)), clarabel.NonnegativeConeT(len(le.b))] + \
            [clarabel.SecondOrderConeT(4)] * na
        self.q = np.zeros(nv)
        self.q[L] = d.r
        self.P = sp.csc_matrix((nv, nv))
        self.settings = clarabel.DefaultSettings()
        self.settings.verbose = False
        self.settings.presolve_enable = False  # keeps rows fixed, so b can be changed per node
        # node bounds need not be tight to 1e-8: the dual objective bounds them either way
        self.settings.tol_gap_abs = self.settings.tol_gap_rel = 1e-6
        self.settings.tol_feas = 1e-7

    def solve(self, fixed: Mapping[int, bool]) -> NodeBound:
        """Bound with arc k's activity fixed to 1 (True) or 0 (False) for each k in `fixed`."""
        b = self.b.copy()
        for k, on in fixed.items():
            if on:
                b[self._le0 + self._lower_row[k]] = -1.0
            else:
                b[self._le0 + self._upper_row[k]] = 0.0
        sol = clarabel.DefaultSolver(self.P, self.q, self.A, b, self.cones, self.settings).solve()
        status = str(sol.status)
        na = self.data.n_arc
        if status in ("Solved", "AlmostSolved"):
            x = np.asarray(sol.x)
            # the dual objective bounds the optimum from below (weak duality)
            bound = min(sol.obj_val, sol.obj_val_dual)
            if status == "AlmostSolved":
                bound -= 1e-6 * abs(bound)
            return NodeBound("solved", float(bound), np.clip(x[self._a], 0.0, 1.0),
                             np.abs(x[self._p]))
        if status == "PrimalInfeasible":
            return NodeBound("infeasible", float("inf"), np.zeros(na), np.zeros(na))
        return NodeBound("failed", -float("inf"), np.zeros(na), np.zeros(na))
