"""Radial configurations of a network: fundamental cycles, their count, their enumeration.

The feed buses are merged into one root, so a radial configuration is a spanning
tree of the merged graph: every bus fed by exactly one path from exactly one
feed. Its open branches (the cotree) are found without building trees: a set O
of m = branches - (nodes - 1) branches is the cotree of a spanning tree exactly
when the columns of the fundamental-cycle matrix at O are linearly independent
over GF(2) (the cycle matrix represents the bond matroid, whose bases are the
cotrees). That test runs vectorised over all candidate sets at once.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from math import comb

import numpy as np
from numpy.typing import NDArray

from powerflow.grid.case import Case, CaseError
from powerflow.model.mesh import DisjointSets

Ints = NDArray[np.int64]


@dataclass(frozen=True)
class Cycles:
    """Fundamental cycles of the merged graph w.r.t. a spanning tree of it."""

    tree_branches: Ints  # branches of the reference spanning tree
    chords: Ints  # the other branches: one fundamental cycle each
    members: list[Ints]  # branches of each cycle (its chord included)
    masks: NDArray[np.int64]  # per branch: bit c set when the branch lies on cycle c


def merged_nodes(case: Case) -> Ints:
    """Node of each bus after merging the feed buses into node 0."""
    node = np.empty(case.n_bus, np.int64)
    others = np.setdiff1d(np.arange(case.n_bus), case.slack)
    node[case.slack] = 0
    node[others] = np.arange(1, len(others) + 1)
    return node


def fundamental_cycles(case: Case) -> Cycles:
    """Cycles of the whole network (every branch, open or closed), preferring the
    closed branches for the reference tree so that the normally-open ties are chords."""
    node = merged_nodes(case)
    nn = int(node.max()) + 1
    order = np.concatenate([np.flatnonzero(case.closed), np.flatnonzero(~case.closed)])
    sets = DisjointSets(nn)
    tree, chords = [], []
    for b in order:
        if sets.union(int(node[case.f[b]]), int(node[case.t[b]])):
            tree.append(int(b))
        else:
            chords.append(int(b))
    if len(tree) != nn - 1:
        raise CaseError(f"{case.name}: the network is not connected even with every branch closed")
    # paths in the reference tree
    adj: list[list[tuple[int, int]]] = [[] for _ in range(nn)]
    for b in tree:
        u, w = int(node[case.f[b]]), int(node[case.t[b]])
        adj[u].append((w, b))
        adj[w].append((u, b))
    par = np.full(nn, -1, np.int64)
    pbr = np.full(nn, -1, np.int64)
    depth = np.zeros(nn, np.int64)
    seen = np.zeros(nn, bool)
    seen[0] = True
    q = deque([0])
    while q:
        u = q.popleft()
        for w, b in adj[u]:
            if not seen[w]:
                seen[w] = True
                par[w], pbr[w], depth[w] = u, b, depth[u] + 1
                q.append(w)
    members = []
    masks = np.zeros(case.n_branch, np.int64)
    for c, ch in enumerate(chords):
        u, w = int(node[case.f[ch]]), int(node[case.t[ch]])
        path = [ch]
        while u != w:
            if depth[u] >= depth[w]:
                path.append(int(pbr[u]))
                u = int(par[u])
            else:
                path.append(int(pbr[w]))
                w = int(par[w])
        arr = np.array(path, np.int64)
        members.append(arr)
        masks[arr] |= 1 << c
    return Cycles(np.array(tree, np.int64), np.array(chords, np.int64), members, masks)


def count_radial(case: Case) -> int:
    """Number of radial configurations: spanning trees of the merged graph that keep every
    non-switchable branch closed (Kirchhoff's matrix-tree theorem, exact integers)."""
    node = merged_nodes(case)
    nn = int(node.max()) + 1
    # non-switchable branches are contracted: they are in every configuration
    sets = DisjointSets(nn)
    for b in np.flatnonzero(~case.switchable):
        if not sets.union(int(node[case.f[b]]), int(node[case.t[b]])):
            return 0  # fixed branches already form a loop
    find = sets.find
    roots = sorted({find(a) for a in range(nn)})
    idx = {r: k for k, r in enumerate(roots)}
    k = len(roots)
    lap = [[0] * k for _ in range(k)]
    for b in np.flatnonzero(case.switchable):
        u, w = idx[find(int(node[case.f[b]]))], idx[find(int(node[case.t[b]]))]
        if u != w:
            lap[u][u] += 1
            lap[w][w] += 1
            lap[u][w] -= 1
            lap[w][u] -= 1
    return _int_det([row[1:] for row in lap[1:]])


def _int_det(m: list[list[int]]) -> int:
    """Exact determinant of an integer matrix (Bareiss elimination)."""
    n = len(m)
    if n == 0:
        return 1
    a = [row[:] for row in m]
    sign, prev = 1, 1
    for k in range(n - 1):
        if a[k][k] == 0:
            for i in range(k + 1, n):
                if a[i][k]:
                    a[k], a[i] = a[i], a[k]
                    sign = -sign
                    break
            else:
                return 0
        for i in range(k + 1, n):
            for j in range(k + 1, n):
                a[i][j] = (a[i][j] * a[k][k] - a[i][k] * a[k][j]) // prev
        prev = a[k][k]
    return sign * a[n - 1][n - 1]


def independent_gf2(vectors: NDArray[np.int64], m: int) -> NDArray[np.bool_]:
    """For each row of bitmask vectors (K x m), whether they are independent over GF(2)."""
    v = vectors.copy()
    k = v.shape[0]
    ok = np.ones(k, bool)
    used = np.zeros(v.shape, bool)
    rows = np.arange(k)
    for c in range(m):
        has = ((v >> c) & 1).astype(bool)
        cand = has & ~used
        piv = np.argmax(cand, axis=1)
        found = cand[rows, piv]
        ok &= found
        pv = np.where(found, v[rows, piv], 0)
        clear = has.copy()
        clear[rows, piv] = False
        v ^= np.where(clear, pv[:, None], 0)
        used[rows, piv] |= found
    return ok


def enumerate_radial(case: Case, limit: int = 5_000_000, chunk: int = 500_000) -> Ints:
    """Every radial configuration as its sorted open-branch indices (K x m).

    Raises CaseError when more than `limit` candidate sets would have to be tested
    (use the optimisation method for such networks).
    """
    cyc = fundamental_cycles(case)
    m = len(cyc.chords)
    if m == 0:
        return np.zeros((1, 0), np.int64)
    cand_branches = np.flatnonzero((cyc.masks != 0) & case.switchable)
    n_cand = comb(len(cand_branches), m)
    if n_cand > limit:
        raise CaseError(f"{case.name}: {n_cand:,} candidate sets of {m} open branches: too many "
                        "to enumerate; use the optimisation method")
    masks = cyc.masks[cand_branches]
    out = []
    it = itertools.combinations(range(len(cand_branches)), m)
    while True:
        flat = np.fromiter(itertools.chain.from_iterable(itertools.islice(it, chunk)), np.int64)
        if flat.size == 0:
            break
        combos = flat.reshape(-1, m)
        keep = independent_gf2(masks[combos], m)
        out.append(cand_branches[combos[keep]])
    return np.concatenate(out) if out else np.zeros((0, m), np.int64)
