"""Load flow: the direct BIBC/BCBV/DLF method for radial networks (Teng 2003) and
Newton-Raphson for meshed ones, AC or DC, on a `Case`. Pure computation.

Conventions: p.u. on the case's base; loads consume; branch current is positive
from `f` to `t`. Every answer marked converged has had its bus power balance
checked against the network equations (residual below `RESIDUAL_TOL`), so a
diverged or false fixed point is never reported as a solution.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from numpy.typing import NDArray

from powerflow.grid.case import Case, CaseError
from powerflow.model.mesh import laplacian_sparse
from powerflow.model.arrays import Complexes

RESIDUAL_TOL = 1e-6  # p.u. power mismatch accepted as a solution
V_COLLAPSE = 0.3  # p.u.: below this a fixed-point iteration is taken as collapsing


@dataclass(frozen=True)
class FlowResult:
    case: Case
    converged: bool
    v: Complexes  # bus voltages, p.u.
    i_branch: Complexes  # branch currents f -> t, p.u. (0 for open branches)
    iterations: int
    method: str
    message: str = ""

    @property
    def loss(self) -> complex:
        """Losses in the branches, p.u. (P + jQ): series losses, and on a case that is not
        plain the branches' shunts too (iron losses, line charging), as pandapower's
        `pl_mw`/`ql_mvar` count them. Bus shunts are loads, not losses."""
        if self.case.plain:
            return complex(np.sum(np.abs(self.i_branch) ** 2 * self.case.z))
        return complex(self.branch_losses().sum())

    def branch_losses(self) -> Complexes:
        """Each branch's losses, p.u. (S entering at both ends; an open branch kept at one
        end: what it draws there)."""
        c, v = self.case, self.v
        t = c.taps()
        yf = np.zeros(c.n_branch, complex) if c.y_from is None else c.y_from
        yt = np.zeros(c.n_branch, complex) if c.y_to is None else c.y_to
        i_s = self.i_branch
        s_f = v[c.f] * np.conj(i_s / t + yf / t ** 2 * v[c.f])
        s_t = v[c.t] * np.conj(-i_s + yt * v[c.t])
        out = np.where(c.closed, s_f + s_t, 0j)
        if c.keep_end is not None:
            for k in np.flatnonzero(~c.closed & (c.keep_end >= 0)):
                out[k] = np.conj(c.open_shunt(int(k))) * abs(v[c.keep_end[k]]) ** 2
        return out

    @property
    def loss_kw(self) -> float:
        return self.loss.real * self.case.base_mva * 1e3

    @property
    def loss_kvar(self) -> float:
        return self.loss.imag * self.case.base_mva * 1e3

    @property
    def vm(self) -> NDArray[np.float64]:
        return np.abs(self.v)

    @property
    def vmin_pu(self) -> float:
        return float(self.vm.min())

    @property
    def vmin_bus(self) -> int:
        """External number of the bus with the lowest voltage."""
        return int(self.case.bus_ids[int(np.argmin(self.vm))])

    def s_from(self) -> Complexes:
        """Complex power entering each branch at its from-bus, p.u."""
        return self.v[self.case.f] * np.conj(self.i_branch)


def _no_solution(case: Case, method: str, message: str, iterations: int = 0) -> FlowResult:
    nan = np.full(case.n_bus, np.nan + 0j)
    return FlowResult(case, False, nan, np.zeros(case.n_branch, complex), iterations, method, message)


def ybus(case: Case) -> sp.csr_matrix:
    """Bus admittance matrix of the closed branches, with their ratios and every shunt
    (MATPOWER's model: Yff = ys/t^2, Yft = Ytf = -ys/t, Ytt = ys, t real)."""
    on = case.closed
    if case.plain:
        return laplacian_sparse(case.n_bus, case.f[on], case.t[on], 1.0 / case.z[on])
    f, t_, ys, tap = case.f[on], case.t[on], 1.0 / case.z[on], case.taps()[on]
    n = case.n_bus
    rows = np.concatenate([f, f, t_, t_, np.arange(n)])
    cols = np.concatenate([f, t_, f, t_, np.arange(n)])
    vals = np.concatenate([ys / tap ** 2, -ys / tap, -ys / tap, ys, case.shunts()])
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, n))


def mismatch(case: Case, v: Complexes) -> float:
    """Largest bus power mismatch (p.u.) of voltages `v` at the non-slack buses."""
    s_calc = v * np.conj(ybus(case) @ v)
    mis = s_calc + case.s_load
    mask = np.ones(case.n_bus, bool)
    mask[case.slack] = False
    return float(np.max(np.abs(mis[mask]))) if mask.any() else 0.0


@dataclass(frozen=True)
class Tree:
    """A radial configuration oriented from the feed: BFS order, parents, parent branches."""

    order: NDArray[np.int64]  # buses, root(s) first
    parent: NDArray[np.int64]  # parent bus, -1 for roots
    parent_branch: NDArray[np.int64]  # branch to the parent, -1 for roots
    sign: NDArray[np.float64]  # +1 if the parent branch runs parent -> bus as f -> t


def orient(case: Case) -> Tree:
    """Orient the closed branches from the slack buses. Raises CaseError if they are
    not radial (a loop, or two feeds joined) or leave a loaded bus unsupplied."""
    n = case.n_bus
    adj: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for br in np.flatnonzero(case.closed):
        adj[case.f[br]].append((int(case.t[br]), int(br)))
        adj[case.t[br]].append((int(case.f[br]), int(br)))
    parent = np.full(n, -1, np.int64)
    pbr = np.full(n, -1, np.int64)
    seen = np.zeros(n, bool)
    order: list[int] = []
    q: deque[int] = deque()
    for s in case.slack:
        seen[s] = True
        q.append(int(s))
    while q:
        i = q.popleft()
        order.append(i)
        for j, b in adj[i]:
            if b == pbr[i]:
                continue
            if seen[j]:
                raise CaseError(f"{case.name}: the closed branches are not radial "
                                f"(loop through branch {b + 1})")
            seen[j] = True
            parent[j] = i
            pbr[j] = b
            q.append(j)
    if not seen.all():
        lost = np.flatnonzero(~seen)
        if np.any(case.s_load[lost] != 0):
            raise CaseError(f"{case.name}: bus {case.bus_ids[lost[0]]} is not connected to a feed")
    sign = np.where(pbr >= 0, np.where(case.f[np.maximum(pbr, 0)] == parent, 1.0, -1.0), 0.0)
    return Tree(np.array(order, np.int64), parent, pbr, sign)


def is_radial(case: Case) -> bool:
    try:
        orient(case)
    except CaseError:
        return False
    return True


def dlf_matrix(case: Case, tree: Tree) -> tuple[Complexes, NDArray[np.int64]]:
    """Teng's DLF = BCBV @ BIBC over the non-root buses in BFS order.

    Returns (DLF, buses): DLF[i, j] is the impedance common to the paths from
    the feed to buses[i] and to buses[j].
    """
    buses = np.array([b for b in tree.order if tree.parent[b] >= 0], np.int64)
    col = {int(b): k for k, b in enumerate(buses)}
    m = len(buses)
    # path incidence: P[i, k] = 1 when the parent branch of buses[k] lies on the path to buses[i]
    paths = np.zeros((m, m))
    for k, b in enumerate(buses):
        p = tree.parent[b]
        if p in col:
            paths[k] = paths[col[int(p)]]
        paths[k, k] = 1.0
    z = case.z[tree.parent_branch[buses]]
    bibc = paths.T  # branch (by child bus) x bus: which bus currents flow in each branch
    bcbv = paths * z  # bus x branch: which branch drops lie between the feed and each bus
    return bcbv @ bibc, buses


def solve_radial(case: Case, tol: float = 1e-10, max_iter: int = 100) -> FlowResult:
    """BIBC/BCBV/DLF fixed-point load flow of a radial case (Teng 2003)."""
    if len(set(np.round(case.v_slack, 12))) > 1:
        raise CaseError(f"{case.name}: feeds at different voltages need the Newton method")
    tree = orient(case)
    if not case.plain:
        return _sweep(case, tree, tol, max_iter)
    dlf, buses = dlf_matrix(case, tree)
    v0 = complex(case.v_slack[0])
    s = case.s_load[buses]
    v = np.full(len(buses), v0, complex)
    it = 0
    for it in range(1, max_iter + 1):
        i_inj = np.conj(s / v)
        v_new = v0 - dlf @ i_inj
        if not np.all(np.isfinite(v_new)) or np.min(np.abs(v_new)) < V_COLLAPSE:
            return _no_solution(case, "bibc", "voltage collapse (no load-flow solution)", it)
        step = np.max(np.abs(v_new - v))
        v = v_new
        if step < tol:
            break
    else:
        return _no_solution(case, "bibc", f"no convergence in {max_iter} iterations", it)
    return _finish(case, tree, buses, v, v0, it)


def _sweep(case: Case, tree: Tree, tol: float, max_iter: int) -> FlowResult:
    """Backward/forward sweep for a radial case with ratios and shunts. Each bus draws its
    load's current and its shunts'; the current into a subtree crosses its parent branch's
    series impedance, and a ratio t at the from end scales voltage by 1/t and current by t
    (as the Y-bus above has it). Checked like every other answer by the residual."""
    n = case.n_bus
    v0 = complex(case.v_slack[0])
    v = np.full(n, v0, complex)
    v[case.slack] = case.v_slack
    ysh = case.shunts()
    tap = case.taps()
    order = tree.order
    kids = order[tree.parent[order] >= 0]
    br = tree.parent_branch[kids]
    down = tree.sign[kids] > 0  # the parent is the from end: the ratio is on its side
    t_k = tap[br]
    z_k = case.z[br]
    s = case.s_load
    it = 0
    for it in range(1, max_iter + 1):
        i_draw = np.conj(s / v) + ysh * v  # each bus's own current
        i_sub = i_draw.copy()
        i_ser = np.zeros(len(kids), complex)  # series current, parent side -> child side
        for k in range(len(kids) - 1, -1, -1):
            b = kids[k]
            i_ser[k] = i_sub[b] if down[k] else i_sub[b] * t_k[k]
            i_sub[tree.parent[b]] += i_ser[k] / t_k[k] if down[k] else i_ser[k]
        v_new = v.copy()
        for k in range(len(kids)):
            b, p = kids[k], tree.parent[kids[k]]
            v_new[b] = (v_new[p] / t_k[k] - z_k[k] * i_ser[k] if down[k]
                        else t_k[k] * (v_new[p] - z_k[k] * i_ser[k]))
        if not np.all(np.isfinite(v_new)) or np.min(np.abs(v_new[kids])) < V_COLLAPSE:
            return _no_solution(case, "bibc", "voltage collapse (no load-flow solution)", it)
        step = np.max(np.abs(v_new - v))
        v = v_new
        if step < tol:
            break
    else:
        return _no_solution(case, "bibc", f"no convergence in {max_iter} iterations", it)
    i_br = np.zeros(case.n_branch, complex)
    i_br[br] = np.where(down, i_ser, -i_ser)  # f -> t through the series impedance
    res = mismatch(case, v)
    if res > RESIDUAL_TOL:
        return _no_solution(case, "bibc", f"residual {res:.2e} p.u. after {it} iterations", it)
    return FlowResult(case, True, v, i_br, it, "bibc")


def _finish(case: Case, tree: Tree, buses: NDArray[np.int64], v_nonroot: Complexes, v0: complex,
            it: int) -> FlowResult:
    v_all = np.full(case.n_bus, v0, complex)
    v_all[buses] = v_nonroot
    # branch currents from the subtree sums, sign by orientation
    i_sub = np.zeros(case.n_bus, complex)
    i_sub[buses] = np.conj(case.s_load[buses] / v_nonroot)
    for b in tree.order[::-1]:
        p = tree.parent[b]
        if p >= 0:
            i_sub[p] += i_sub[b]
    i_br = np.zeros(case.n_branch, complex)
    kids = buses
    i_br[tree.parent_branch[kids]] = tree.sign[kids] * i_sub[kids]
    res = mismatch(case, v_all)
    if res > RESIDUAL_TOL:
        return _no_solution(case, "bibc", f"residual {res:.2e} p.u. after {it} iterations", it)
    return FlowResult(case, True, v_all, i_br, it, "bibc")


def solve_newton(case: Case, tol: float = 1e-10, max_iter: int = 30) -> FlowResult:
    """Newton-Raphson (polar) for any topology, meshed included; all non-slack buses PQ."""
    n = case.n_bus
    y = ybus(case).tocsc()
    pq = np.setdiff1d(np.arange(n), case.slack)
    v = np.ones(n, complex)
    v[case.slack] = case.v_slack
    s_spec = -case.s_load
    it = 0
    for it in range(1, max_iter + 1):
        i_bus = y @ v
        mis = v * np.conj(i_bus) - s_spec
        f = np.concatenate([mis[pq].real, mis[pq].imag])
        if np.max(np.abs(f)) < tol:
            break
        dv = sp.diags(v)
        di = sp.diags(i_bus)
        vn = sp.diags(v / np.abs(v))
        ds_dvm = dv @ np.conj(y @ vn) + np.conj(di) @ vn
        ds_dva = 1j * dv @ np.conj(di - y @ dv)
        j11 = ds_dva[pq][:, pq].real
        j12 = ds_dvm[pq][:, pq].real
        j21 = ds_dva[pq][:, pq].imag
        j22 = ds_dvm[pq][:, pq].imag
        jac = sp.vstack([sp.hstack([j11, j12]), sp.hstack([j21, j22])]).tocsc()
        try:
            dx = spla.spsolve(jac, -f)
        except RuntimeError:
            return _no_solution(case, "newton", "singular Jacobian", it)
        if not np.all(np.isfinite(dx)):
            return _no_solution(case, "newton", "singular Jacobian", it)
        va = np.angle(v)
        vm = np.abs(v)
        npq = len(pq)
        va[pq] += dx[:npq]
        vm[pq] += dx[npq:]
        if np.min(vm) < V_COLLAPSE:
            return _no_solution(case, "newton", "voltage collapse (no load-flow solution)", it)
        v = vm * np.exp(1j * va)
    else:
        return _no_solution(case, "newton", f"no convergence in {max_iter} iterations", it)
    res = mismatch(case, v)
    if res > RESIDUAL_TOL:
        return _no_solution(case, "newton", f"residual {res:.2e} p.u.", it)
    i_br = np.where(case.closed, (v[case.f] / case.taps() - v[case.t]) / case.z, 0)
    return FlowResult(case, True, v, i_br, it, "newton")


def solve(case: Case, method: str = "auto", tol: float = 1e-10) -> FlowResult:
    """Load flow by `method`: "bibc" (radial only), "newton", or "auto" (BIBC when the
    closed branches are radial, Newton otherwise)."""
    if method == "bibc" or (method == "auto" and is_radial(case)
                            and len(set(np.round(case.v_slack, 12))) == 1):
        return solve_radial(case, tol)
    if method in ("newton", "auto"):
        return solve_newton(case, tol)
    raise ValueError(f"unknown load-flow method {method!r} (auto, bibc, newton)")
