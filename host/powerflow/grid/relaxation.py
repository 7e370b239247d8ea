"""The continuous (second-order cone) relaxation of the reconfiguration model, solved by
Clarabel, with any arcs' activities fixed: the bound of one branch-and-bound node.

Relaxing a in [0, 1] alone would let a half-active arc carry half the flow at a quarter
of the loss. The loss of each switchable arc is therefore written in perspective:
P^2 + Q^2 <= s l with s <= w_hi a and s <= w_tail - w_lo (1 - a) (the McCormick
envelope of a w_tail), so that splitting a flow over fractional arcs saves nothing
locally. Voltage drops on switchable arcs hold only when active (big-M on w_hi - w_lo).

On a case with ratios and shunts (see `branchflow`): the drop reads alpha_head w_head =
alpha_tail w_tail - 2 (r P + x Q) + |z|^2 l, the cone P^2 + Q^2 <= s l with s = alpha_tail
w_tail when active, the node balances take the shunts' consumption, and the objective is
every branch's loss (series, and the conductance of its shunts), as the exact load flow
counts it: every configuration's exact solution is a point of this model, so its optimum
bounds them all from below.
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
DUAL_SLACK = 1e-5  # relative allowance on a bound computed from an ancestor's dual


@dataclass(frozen=True)
class NodeBound:
    status: str  # "solved", "infeasible" or "failed"
    bound_pu: float  # a lower bound on the losses of every configuration in the node, p.u.
    activity: Floats  # a per arc in the relaxed optimum
    flow: Floats  # |P| per arc in the relaxed optimum, p.u.
    dual: Floats | None = None  # z of the solve (Clarabel's sign convention), if solved


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
        ne = len(d.end_shunts)
        U = nn + 5 * na + np.arange(ne)  # w x (the branch is closed), per end shunt
        nv = nn + 5 * na + ne
        # with injections (DG), P splits into two commodities: demand flowing down (Pd, with
        # the losses and the shunts' conductance) and generation flowing up (Pg), P = Pd - Pg;
        # then an active arc still delivers at least its head's demand and carries its
        # head's generation up: the rows loads-only networks have, kept valid with DG
        # (Q is not split: on mv_oberrhein, whose charging is its only reactive injection,
        # splitting Q left the root bound where it was at twice the solve time)
        split = not d.p_rows
        Pd = nv + np.arange(na)
        Pg = Pd + na
        if split:
            nv += 2 * na
        a_t = d.alpha_tail if d.alpha_tail is not None else np.ones(na)
        a_h = d.alpha_head if d.alpha_head is not None else np.ones(na)
        y_node = d.y_node if d.y_node is not None else np.zeros(nn, complex)
        arcs_of = d.arcs_by_branch()
        eq, le, cones = _Rows(), _Rows(), _Rows()
        eq.add({W[0]: 1.0}, d.w_feed)
        for i in range(nn):
            ks = d.into(i)
            if len(ks):
                eq.add({A[k]: 1.0 for k in ks}, 0.0 if i == 0 else 1.0)
        eq.add({A[k]: 1.0 for k in range(na)}, nn - 1.0)  # n - 1 closed branches
        def consumption(i: int, part: str) -> list[tuple[float, dict[int, float]]]:
            """Node i's shunts as (coefficient, linear expression) pairs: G (or -B) times w,
            w z (a switched branch's end shunt while closed) or w - w z (while open)."""
            comp = (lambda y: y.real) if part == "p" else (lambda y: -y.imag)
            out = []
            if y_node[i] != 0:
                out.append((comp(y_node[i]), {int(W[i]): 1.0}))
            for e, es in enumerate(d.end_shunts):
                if es.node == i:
                    out.append((comp(es.y), {int(U[e]): 1.0}))
                    if es.y_open != 0:
                        out.append((comp(es.y_open), {int(W[i]): 1.0, int(U[e]): -1.0}))
            return out

        def add_terms(coef: dict[int, float], terms: list[tuple[float, dict[int, float]]],
                      scale: float) -> None:
            for g, expr in terms:
                for col, c in expr.items():
                    coef[col] = coef.get(col, 0.0) - scale * g * c

        for i in range(1, nn):
            # inflow - outflow - shunt consumption (G w; -B w for Q) = load
            for flow, imp, load, part in ((P, d.r, d.p[i], "p"), (Q, d.x, d.q[i], "q")):
                if part == "p" and split:
                    continue  # the two commodities' balances below add up to it
                coef: dict[int, float] = {}
                for k in d.into(i):
                    coef[flow[k]] = coef.get(flow[k], 0.0) + 1.0
                    coef[L[k]] = coef.get(L[k], 0.0) - imp[k]
                for k in np.flatnonzero(d.arc_tail == i):
                    coef[flow[k]] = coef.get(flow[k], 0.0) - 1.0
                add_terms(coef, consumption(i, part), 1.0)
                eq.add(coef, load)
        for on, flow, dflow, gflow, imp, part, net in ((split, P, Pd, Pg, d.r, "p", d.p),):
            if not on:
                continue
            demand, gen = np.maximum(net, 0.0), np.maximum(-net, 0.0)
            for i in range(1, nn):
                # the demand commodity (with the losses and consuming shunts) flows down ...
                coef = {}
                for k in d.into(i):
                    coef[dflow[k]] = coef.get(dflow[k], 0.0) + 1.0
                    coef[L[k]] = coef.get(L[k], 0.0) - imp[k]
                for k in np.flatnonzero(d.arc_tail == i):
                    coef[dflow[k]] = coef.get(dflow[k], 0.0) - 1.0
                add_terms(coef, [(g, e) for g, e in consumption(i, part) if g > 0], 1.0)
                eq.add(coef, demand[i])
                # ... generation (and generating shunts, |G| w or B w) flows up
                coef = {gflow[k]: 1.0 for k in d.into(i)}
                for k in np.flatnonzero(d.arc_tail == i):
                    coef[gflow[k]] = coef.get(gflow[k], 0.0) - 1.0
                add_terms(coef, [(-g, e) for g, e in consumption(i, part) if g < 0], 1.0)
                eq.add(coef, gen[i])
            g_tot = float(gen.sum()) * 1.0001 + 1e-9 + 2 * d.w_hi * sum(
                max(-g, 0.0) for i in range(nn) for g, _ in consumption(i, part))
            d_max = d.p_max
            for k in range(na):
                h = int(d.arc_head[k])
                eq.add({flow[k]: 1.0, dflow[k]: -1.0, gflow[k]: 1.0}, 0.0)
                le.add({dflow[k]: -1.0}, 0.0)
                le.add({gflow[k]: -1.0}, 0.0)
                # an active arc delivers at least its head's demand, carries up its generation
                le.add({dflow[k]: -1.0, L[k]: imp[k], A[k]: demand[h]}, 0.0)
                le.add({gflow[k]: -1.0, A[k]: gen[h]}, 0.0)
                le.add({dflow[k]: 1.0, A[k]: -(d_max + g_tot)}, 0.0)
                le.add({gflow[k]: 1.0, A[k]: -g_tot}, 0.0)
        for e, es in enumerate(d.end_shunts):  # McCormick: U = w z, exact at z = 0 and 1
            z = {A[k]: 1.0 for k in arcs_of[es.branch]}
            w = W[es.node]
            le.add({U[e]: -1.0, **{c: d.w_lo for c in z}}, 0.0)  # U >= w_lo z
            le.add({U[e]: -1.0, w: 1.0, **{c: d.w_hi for c in z}}, d.w_hi)  # U >= w - w_hi(1-z)
            le.add({U[e]: 1.0, **{c: -d.w_hi for c in z}}, 0.0)  # U <= w_hi z
            le.add({U[e]: 1.0, w: -1.0, **{c: -d.w_lo for c in z}}, -d.w_lo)  # U <= w - w_lo(1-z)
        for i in range(nn):
            le.add({W[i]: 1.0}, d.w_hi)
            le.add({W[i]: -1.0}, -d.w_lo)
        p_rows, q_rows = d.p_rows, d.q_rows
        # per switchable arc, the row (among the <= rows) of its a >= 0 and a <= 1 bounds:
        # the two entries of b a node changes to fix it on or off (-1 elsewhere)
        self._lower_row = np.full(na, -1, np.int64)
        self._upper_row = np.full(na, -1, np.int64)
        for k in range(na):
            t, h, r, x = int(d.arc_tail[k]), int(d.arc_head[k]), d.r[k], d.x[k]
            drop = {W[h]: a_h[k], W[t]: -a_t[k], P[k]: 2 * r, Q[k]: 2 * x,
                    L[k]: -(r * r + x * x)}
            big = max(a_h[k], a_t[k]) * d.w_hi - min(a_h[k], a_t[k]) * d.w_lo
            le.add({L[k]: -1.0}, 0.0)
            # delivers at least the head's load when active (branchflow), where that holds
            if p_rows:
                le.add({P[k]: -1.0, L[k]: r, A[k]: d.p[h]}, 0.0)
            if q_rows:
                le.add({Q[k]: -1.0, L[k]: x, A[k]: d.q[h]}, 0.0)
            if d.arc_fixed[k]:
                eq.add({A[k]: 1.0}, 1.0)
                eq.add({S[k]: 1.0, W[t]: -a_t[k]}, 0.0)
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
                le.add({S[k]: 1.0, A[k]: -a_t[k] * d.w_hi}, 0.0)
                le.add({S[k]: 1.0, W[t]: -a_t[k], A[k]: -a_t[k] * d.w_lo}, -a_t[k] * d.w_lo)
            # rotated cone P^2 + Q^2 <= s l  as  ||(2P, 2Q, s - l)|| <= s + l
            cones.add({S[k]: -1.0, L[k]: -1.0}, 0.0)
            cones.add({P[k]: -2.0}, 0.0)
            cones.add({Q[k]: -2.0}, 0.0)
            cones.add({S[k]: -1.0, L[k]: 1.0}, 0.0)
        for b, pair in arcs_of.items():  # a branch is closed in one direction at most
            if len(pair) == 2:
                if d.must_close is not None and d.must_close[b]:  # not switchable: closed
                    eq.add({A[k]: 1.0 for k in pair}, 1.0)
                else:
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
        # the branches' shunt conductance is loss too (bus shunts are loads: not counted)
        if d.g_loss is not None:
            self.q[W] += d.g_loss
        for e, es in enumerate(d.end_shunts):
            self.q[U[e]] += es.y.real - es.y_open.real
            self.q[W[es.node]] += es.y_open.real
        self.P = sp.csc_matrix((nv, nv))
        self.settings = clarabel.DefaultSettings()
        self.settings.verbose = False
        self.settings.presolve_enable = False  # keeps rows fixed, so b can be changed per node
        # node bounds need not be tight to 1e-8: the dual objective bounds them either way
        self.settings.tol_gap_abs = self.settings.tol_gap_rel = 1e-6
        self.settings.tol_feas = 1e-7
        # iterative refinement of each KKT solve was 44 % of a node's time; without it the
        # same termination tests hold and the bounds move by < 3e-4 relative, always down
        # (replayed on the nodes of case136ma and case118zh searches: 50 -> 28 ms a node)
        self.settings.iterative_refinement_enable = False
        self._solver: clarabel.DefaultSolver | None = None

    def rhs(self, fixed: Mapping[int, bool]) -> Floats:
        """b with arc k's activity fixed to 1 (True) or 0 (False) for each k in `fixed`: a
        node differs from the root in b alone (A, q and the cones are the same)."""
        b = self.b.copy()
        for k, on in fixed.items():
            if self._lower_row[k] < 0:
                raise KeyError(f"arc {k} is not switchable")
            if on:
                b[self._le0 + self._lower_row[k]] = -1.0
            else:
                b[self._le0 + self._upper_row[k]] = 0.0
        return b

    def bound_from(self, parent: NodeBound, fixed: Mapping[int, bool]) -> float:
        """A lower bound on node `fixed` from a solved ancestor's dual, without a solve.

        The ancestor's z satisfies A'z + q = 0 and z in K* whatever b is, so it is feasible
        for the node's dual too, whose objective at z, -b'z, bounds the node's optimum from
        below (weak duality). A descendant that fixes an arc against the ancestor's optimum
        pays that arc's multiplier: often enough to prune it unsolved. -inf without a dual."""
        if parent.dual is None:
            return -float("inf")
        v = -float(self.rhs(fixed) @ parent.dual)
        return v - DUAL_SLACK * abs(v)  # z is dual feasible to the solver's tolerance only

    def implied(self, parent: NodeBound, fixed: Mapping[int, bool], cutoff: float
                ) -> tuple[dict[int, bool] | None, float]:
        """Reduced-cost fixing from a solved ancestor's dual: the free arcs whose other value
        the dual already prices at or above `cutoff` (p.u.), each fixed to the value left,
        and the least bound of what that leaves out (inf if nothing). (None, bound) when
        an arc is priced over `cutoff` both ways: the node holds nothing under it.

        Fixing a free arc k on moves one entry of b (its lower row, 0 to -1), off another
        (its upper row, 1 to 0), so -b'z rises by that row's z >= 0 and the bound of the
        node with k fixed either way is the node's own dual bound plus one entry of z: the
        whole test is a vector add. A fixed arc tightens the node's relaxation (its children
        start from a smaller problem) at no cost of a solve."""
        if parent.dual is None:
            return {}, float("inf")
        free = np.array([k for k in np.flatnonzero(self._lower_row >= 0).tolist()
                         if k not in fixed], dtype=np.int64)
        if not len(free):
            return {}, float("inf")
        price_on, price_off = self.fixing_prices(parent)
        base = -float(self.rhs(fixed) @ parent.dual)
        on = base + price_on[free]  # the bound with k fixed on
        off = base + price_off[free]  # ... and fixed off
        on = on - DUAL_SLACK * np.abs(on)
        off = off - DUAL_SLACK * np.abs(off)
        both = (on >= cutoff) & (off >= cutoff)
        if both.any():
            return None, float(np.minimum(on, off)[both].max())
        out: dict[int, bool] = {}
        left = float("inf")
        for k, b_on, b_off in zip(free.tolist(), on.tolist(), off.tolist()):
            if b_on >= cutoff:
                out[k], left = False, min(left, b_on)
            elif b_off >= cutoff:
                out[k], left = True, min(left, b_off)
        return out, left

    def fixing_prices(self, parent: NodeBound) -> tuple[Floats, Floats]:
        """Per arc, what fixing it on and what fixing it off adds to a node's dual bound
        (p.u., >= 0, 0 for an arc that is not switchable; see `implied`), from the node's
        own dual; zeros without one."""
        na = self.data.n_arc
        if parent.dual is None:
            return np.zeros(na), np.zeros(na)
        z = parent.dual
        sw = self._lower_row >= 0
        on, off = np.zeros(na), np.zeros(na)
        on[sw] = z[self._le0 + self._lower_row[sw]]
        off[sw] = z[self._le0 + self._upper_row[sw]]
        return on, off

    def solve(self, fixed: Mapping[int, bool]) -> NodeBound:
        """Bound with arc k's activity fixed to 1 (True) or 0 (False) for each k in `fixed`."""
        b = self.rhs(fixed)
        # one solver for every node: only b changes, so its KKT structure and scaling are
        # kept (measured on case136ma: 48 against 54 ms a node built afresh)
        if self._solver is None:
            self._solver = clarabel.DefaultSolver(self.P, self.q, self.A, b, self.cones,
                                                  self.settings)
        else:
            self._solver.update(b=b)
        sol = self._solver.solve()
        status = str(sol.status)
        na = self.data.n_arc
        if status in ("Solved", "AlmostSolved"):
            x = np.asarray(sol.x)
            # the dual objective bounds the optimum from below (weak duality)
            bound = min(sol.obj_val, sol.obj_val_dual)
            if status == "AlmostSolved":
                bound -= 1e-6 * abs(bound)
            return NodeBound("solved", float(bound), np.clip(x[self._a], 0.0, 1.0),
                             np.abs(x[self._p]), np.asarray(sol.z))
        if status == "PrimalInfeasible":
            return NodeBound("infeasible", float("inf"), np.zeros(na), np.zeros(na))
        return NodeBound("failed", -float("inf"), np.zeros(na), np.zeros(na))
