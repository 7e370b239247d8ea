"""The data of the mixed-integer branch-flow model of reconfiguration, shared by its solvers.

DistFlow on directed arcs: every branch that lies on a loop gets two arcs (one per
direction), each with an activity a in {0, 1}; a bridge (a branch on no loop) must be
closed in every radial configuration and its direction is known (away from the feed),
so it gets one arc that is always active. Radiality: every bus but the feed has exactly
one active arc coming in (its parent), and n - 1 branches are closed (Jabr et al. 2012).

Per arc k (tail -> head): real and reactive power P, Q leaving the tail (p.u.), squared
current l (p.u.), and per bus the squared voltage w (p.u.). Loads are positive.

Transformers and line charging (cases that are not plain) enter as MATPOWER's model has
them: an arc whose tail is its branch's from end sees the tail's voltage through the ratio
(w_tail / t^2 drives the impedance; `alpha_tail`), an arc the other way delivers through it
(`alpha_head`); shunts are consumption at their nodes, g w and -b w. A switchable branch's
end shunts are there only while it is closed, so each is g (w z) with z its closedness and
w z a variable of its own (`EndShunt`, bounded by McCormick's envelope: exact at z = 0, 1);
a line kept at one end when open leaves its shunt there, w (1 - z) = w - w z.

With loads only (no injection anywhere but the feed), an active arc delivers to its head
that bus's load plus its whole subtree's, never less: P - r l >= p_head a, and likewise
for Q. Without it a relaxation may run power around a loop against the arcs' direction;
with it the root bound of case136ma rises from 4.8 % to 3.0 % below the optimum, of
case118zh from 9.5 % to 6.8 %, and branch-and-bound proves both optima within 60 s.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from powerflow.grid.case import Case
from powerflow.grid.topology import fundamental_cycles, merged_nodes

Ints = NDArray[np.int64]
Floats = NDArray[np.float64]


@dataclass(frozen=True)
class EndShunt:
    """A switchable branch's shunt at one of its nodes: `y` while the branch is closed,
    `y_open` while it is open (a line kept at that end), p.u., consumption-positive."""

    branch: int
    node: int
    y: complex
    y_open: complex = 0j


@dataclass(frozen=True)
class BranchFlowData:
    n_node: int  # node 0 is the feed (all slack buses merged)
    p: Floats  # net load per node, p.u. (0 at the feed)
    q: Floats
    w_feed: float  # squared feed voltage, p.u.
    w_lo: float  # bounds on every squared voltage
    w_hi: float
    p_max: float  # bound on |P|, |Q| and l of any arc
    q_max: float
    l_max: float
    arc_branch: Ints  # branch of each arc
    arc_tail: Ints
    arc_head: Ints
    arc_fixed: NDArray[np.bool_]  # arc of a bridge: always active
    r: Floats  # per arc
    x: Floats
    cycles: list[Ints]  # branches of each fundamental cycle
    base_kw: float  # p.u. losses -> kW
    alpha_tail: Floats | None = None  # per arc: w_tail x this drives the impedance (1/t^2 or 1)
    alpha_head: Floats | None = None  # per arc: w_head x this is what arrives (1 or 1/t^2)
    y_node: NDArray[np.complex128] | None = None  # per node, shunts always there (p.u.)
    g_loss: Floats | None = None  # per node, the part of y_node.real that is a branch's (a loss)
    end_shunts: tuple[EndShunt, ...] = ()
    must_close: NDArray[np.bool_] | None = None  # per branch: not switchable (closed always)

    def _shunts(self) -> list[complex]:
        ys = [e.y for e in self.end_shunts] + [e.y_open for e in self.end_shunts]
        return ys + ([] if self.y_node is None else list(self.y_node))

    @property
    def p_rows(self) -> bool:
        """No bus injects real power (no negative P load, no shunt of negative conductance):
        an active arc delivers at least its head's P load."""
        return bool((self.p >= 0).all()) and all(y.real >= 0 for y in self._shunts())

    @property
    def q_rows(self) -> bool:
        """Likewise for reactive power (no capacitive shunt: no line charging)."""
        return bool((self.q >= 0).all()) and all(y.imag <= 0 for y in self._shunts())

    @property
    def loads_only(self) -> bool:
        """No bus injects power, real or reactive: flows run away from the feed."""
        return self.p_rows and self.q_rows

    @property
    def n_arc(self) -> int:
        return len(self.arc_branch)

    def into(self, node: int) -> Ints:
        return np.flatnonzero(self.arc_head == node)

    def arcs_by_branch(self) -> dict[int, list[int]]:
        """The arcs (one or two) of each branch."""
        out: dict[int, list[int]] = {}
        for k, b in enumerate(self.arc_branch.tolist()):
            out.setdefault(b, []).append(k)
        return out


def branchflow_data(case: Case, vmin: float | None = None, vmax: float = 1.1) -> BranchFlowData:
    """Model data for `case`, with `vmin` (p.u.) as the lower voltage limit (0.5 if None).

    With loads only (no negative P or Q), no voltage in a radial network exceeds the
    feed's, so the feed voltage bounds them all; this ceiling is what makes the
    perspective of the loss terms tight.
    """
    node = merged_nodes(case)
    nn = int(node.max()) + 1
    p = np.zeros(nn)
    q = np.zeros(nn)
    np.add.at(p, node, case.p_load)
    np.add.at(q, node, case.q_load)
    p[0] = q[0] = 0.0
    v0 = float(case.v_slack[0])
    w_lo = (vmin if vmin is not None else 0.5) ** 2
    w_hi = v0 ** 2 if _loads_only(p, q) else max(vmax, v0) ** 2
    p_max = float(np.abs(p).sum()) * 1.5 + 1e-6
    q_max = float(np.abs(q).sum()) * 1.5 + 1e-6
    cyc = fundamental_cycles(case)
    bridge = cyc.masks == 0
    fn = node[case.f].astype(np.int64)
    tn = node[case.t].astype(np.int64)
    dist = _hops_from_feed(nn, fn, tn)
    br, tail, head, fixed = [], [], [], []
    for b in range(case.n_branch):
        u, t = int(fn[b]), int(tn[b])
        if bridge[b]:
            if dist[t] < dist[u]:
                u, t = t, u
            br.append(b)
            tail.append(u)
            head.append(t)
            fixed.append(True)
        else:
            br += [b, b]
            tail += [u, t]
            head += [t, u]
            fixed += [False, False]
    ab = np.array(br, np.int64)
    tails = np.array(tail, np.int64)
    tap = case.taps()[ab]
    down = fn[ab] == tails  # the arc runs from its branch's from end (the ratio's side)
    y_node, g_loss, ends = _shunts(case, node, nn, cyc.masks == 0)
    if not case.plain:  # taps may lift a voltage above the feed's: the case's ceiling holds
        w_hi = max(vmax, v0) ** 2
    return BranchFlowData(nn, p, q, v0 ** 2, w_lo, w_hi, p_max, q_max,
                          (p_max ** 2 + q_max ** 2) / w_lo, ab, tails,
                          np.array(head, np.int64), np.array(fixed, bool),
                          case.r[ab].astype(float), case.x[ab].astype(float),
                          [np.asarray(m, np.int64) for m in cyc.members], case.base_mva * 1e3,
                          alpha_tail=np.where(down, 1 / tap ** 2, 1.0),
                          alpha_head=np.where(down, 1.0, 1 / tap ** 2),
                          y_node=y_node, g_loss=g_loss, end_shunts=ends,
                          must_close=~case.switchable)


def _shunts(case: Case, node: Ints, nn: int, bridge: NDArray[np.bool_]
            ) -> tuple[NDArray[np.complex128], Floats, tuple[EndShunt, ...]]:
    """The shunts per node that are always there (bus shunts, and the end shunts of branches
    that are always closed), the branch part of their conductance (losses), and those that
    come and go with a switchable branch."""
    y_node = np.zeros(nn, complex)
    g_loss = np.zeros(nn)
    if case.y_bus is not None:
        np.add.at(y_node, node, case.y_bus)
    if case.plain:
        return y_node, g_loss, ()
    zeros = np.zeros(case.n_branch, complex)
    yf = (case.y_from if case.y_from is not None else zeros) / case.taps() ** 2
    yt = case.y_to if case.y_to is not None else zeros
    keep = np.full(case.n_branch, -1) if case.keep_end is None else case.keep_end
    ends: list[EndShunt] = []
    for b in range(case.n_branch):
        always = bridge[b] or not case.switchable[b]
        for bus, y in ((int(case.f[b]), yf[b]), (int(case.t[b]), yt[b])):
            if always:
                y_node[node[bus]] += y
                g_loss[node[bus]] += y.real
            y_open = 0j
            if not always and keep[b] == bus:
                y_open = case.open_shunt(b)
            if not always and (y != 0 or y_open != 0):
                ends.append(EndShunt(b, int(node[bus]), complex(y), complex(y_open)))
    return y_node, g_loss, tuple(ends)


def _loads_only(p: Floats, q: Floats) -> bool:
    return bool((p >= 0).all() and (q >= 0).all())


def _hops_from_feed(nn: int, fn: Ints, tn: Ints) -> Ints:
    adj: list[list[int]] = [[] for _ in range(nn)]
    for u, t in zip(fn.tolist(), tn.tolist()):
        adj[u].append(t)
        adj[t].append(u)
    dist = np.full(nn, -1, np.int64)
    dist[0] = 0
    todo = deque([0])
    while todo:
        u = todo.popleft()
        for t in adj[u]:
            if dist[t] < 0:
                dist[t] = dist[u] + 1
                todo.append(t)
    return dist
