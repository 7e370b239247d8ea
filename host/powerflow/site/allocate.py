"""Site allocation: budgets for every rack, down the power tree, by priority class.

Pure and vectorised over racks (numpy): the site controller calls it every period with what
the racks reported; the bench calls it with 10,000 racks.

The grant is built in levels, most important first: every rack's floor; then the least
power each rack can reach by capping all its classes; then each site class's demand above
that minimum (its P95, at the rack's feed), class by class. Each level is a water-fill of
the tree: bottom-up, a node passes on the least of its remaining capacity and its
children's demand; top-down, a constrained node splits what it has among its children in
proportion to what they pass on. Because a level starts only when the levels above it have
taken what they can under every breaker, no class is ever capped under a constrained
breaker while a lower class under the same breaker gets more than its minimum
(CapMaestro's global priority rule). What no demand needs is lent to the racks as
headroom, up to their own feed limits (`redistribute = "headroom"`), or held back at the
breakers (`"none"`); it is taken back the next period the demand of another rack needs it.

`dispatch` then decides how much of each new budget may be sent now (break before make):
a decrease at once, an increase only within what each breaker has left counting every
budget a rack may still be obeying (an unexpired lease not yet superseded by an
acknowledged one), so the tree holds even while messages are in flight or racks are cut
off. Units: W.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from powerflow.model.site import Site

Floats = NDArray[np.float64]
EPS_W = 1e-6


@dataclass(frozen=True)
class Tree:
    """The site's tree as arrays: every feed, breaker and rack a node, parents before
    children. A lost feed's children hang under its backup (an automatic transfer)."""

    ids: tuple[str, ...]
    kind: tuple[str, ...]  # feed | breaker | rack
    parent: NDArray[np.int64]  # -1 for a feed (a root)
    depth: NDArray[np.int64]
    limit_w: Floats  # continuous limit (W); a rack's: its own feed limit
    overload_frac: Floats
    overload_s: Floats
    rack_node: NDArray[np.int64]  # node index of each rack (site.racks order)
    by_depth: tuple[NDArray[np.int64], ...]
    # ancestor membership: member[n, r] is True when rack r is under node n (or is n)
    member: NDArray[np.bool_]

    @property
    def n(self) -> int:
        return len(self.ids)

    def under(self, x: Floats) -> Floats:
        """Per node, the sum of a per-rack quantity over the racks under it (W)."""
        s = np.zeros(self.n)
        s[self.rack_node] = x
        for d in range(len(self.by_depth) - 1, 0, -1):
            idx = self.by_depth[d]
            s += np.bincount(self.parent[idx], weights=s[idx], minlength=self.n)
        return s


def compile_tree(site: Site, lost: frozenset[str] = frozenset()) -> Tree:
    """The tree of `site` with the feeds in `lost` out of service (their load carried by
    their backups; with no live backup their racks are dark and get no budget)."""
    parent_id: dict[str, str | None] = {}
    kind: dict[str, str] = {}
    lim: dict[str, tuple[float, float, float]] = {}
    for f in site.feeds:
        kind[f.id], lim[f.id] = "feed", (f.limit_w, f.overload_frac, f.overload_s)
        parent_id[f.id] = None
        if f.id in lost and f.backup is not None and f.backup not in lost:
            kind[f.id] = "lost feed"
            parent_id[f.id] = f.backup  # a lost feed passes its load on
            lim[f.id] = (np.inf, 0.0, 0.0)
        elif f.id in lost:
            kind[f.id], lim[f.id] = "lost feed", (0.0, 0.0, 0.0)
    for b in site.breakers:
        kind[b.id], parent_id[b.id] = "breaker", b.parent
        lim[b.id] = (b.limit_w, b.overload_frac, b.overload_s)
    for r in site.racks:
        kind[r.id], parent_id[r.id] = "rack", r.parent
        lim[r.id] = (r.feed_limit_w, 0.0, 0.0)
    depth: dict[str, int] = {}

    def dep(n: str) -> int:
        if n not in depth:
            p = parent_id[n]
            depth[n] = 0 if p is None else dep(p) + 1
        return depth[n]

    order = sorted(parent_id, key=lambda n: (dep(n), n))
    index = {n: k for k, n in enumerate(order)}
    parent = np.array([-1 if parent_id[n] is None else index[parent_id[n]]  # type: ignore[index]
                       for n in order], dtype=np.int64)
    dep_arr = np.array([depth[n] for n in order], dtype=np.int64)
    by_depth = tuple(np.flatnonzero(dep_arr == d) for d in range(int(dep_arr.max()) + 1))
    rack_node = np.array([index[r.id] for r in site.racks], dtype=np.int64)
    member = np.zeros((len(order), len(site.racks)), dtype=bool)
    for k, r in enumerate(site.racks):
        n = int(rack_node[k])
        while n >= 0:
            member[n, k] = True
            n = int(parent[n])
    return Tree(ids=tuple(order), kind=tuple(kind[n] for n in order), parent=parent,
                depth=dep_arr, limit_w=np.array([lim[n][0] for n in order]),
                overload_frac=np.array([lim[n][1] for n in order]),
                overload_s=np.array([lim[n][2] for n in order]),
                rack_node=rack_node, by_depth=by_depth, member=member)


def fill(tree: Tree, cap: Floats, q: Floats) -> Floats:
    """One water-fill level: grant the per-rack requests `q` (W) within the remaining
    capacity `cap` of every node (W, reduced in place by what is granted)."""
    n = tree.n
    s = np.zeros(n)
    e = np.zeros(n)
    s[tree.rack_node] = q
    for d in range(len(tree.by_depth) - 1, -1, -1):
        idx = tree.by_depth[d]
        e[idx] = np.minimum(np.maximum(cap[idx], 0.0), s[idx])
        if d > 0:
            s += np.bincount(tree.parent[idx], weights=e[idx], minlength=n)
    a = np.zeros(n)
    roots = tree.by_depth[0]
    a[roots] = e[roots]
    for d in range(1, len(tree.by_depth)):
        idx = tree.by_depth[d]
        p = tree.parent[idx]
        sp = s[p]
        ratio = np.divide(a[p], sp, out=np.zeros(len(idx)), where=sp > EPS_W)
        a[idx] = e[idx] * np.minimum(ratio, 1.0)
    cap -= a
    return a[tree.rack_node]


@dataclass
class SiteAllocation:
    budget_w: Floats  # per rack: the budget to lease (W)
    granted_w: Floats  # per rack: what its demand was granted (W, before headroom)
    class_granted_w: Floats  # racks x classes: W granted above each class's minimum
    class_capped: NDArray[np.bool_]  # racks x classes: granted short of its P95 demand
    load_w: Floats  # per node: the budgets under it (W)
    reason: list[str]  # per rack: why its budget is what it is


def allocate(tree: Tree, limit_w: Floats, floor_w: Floats, min_w: Floats, p95_w: Floats,
             redistribute: str = "headroom", previous_w: Floats | None = None,
             hysteresis_w: float = 0.0) -> SiteAllocation:
    """Budgets for every rack (W) within `limit_w` (per node, W: the limits in force now).

    `floor_w` (per rack), `min_w` and `p95_w` (racks x classes: the least power each class
    can be capped to, and its P95 demand, at the rack's feed). `previous_w`: last period's
    budgets, kept where the new one differs by less than `hysteresis_w` and the tree holds.
    """
    nr, nc = p95_w.shape
    own = limit_w[tree.rack_node]
    cap = limit_w.astype(float).copy()
    floor = np.minimum(floor_w, own)
    granted = fill(tree, cap, floor)
    base_min = np.maximum(min_w.sum(axis=1) - floor, 0.0)
    granted += fill(tree, cap, base_min)
    extra = np.maximum(p95_w - min_w, 0.0)
    # a floor above the rack's minimum already covers some of its demand, most important first
    surplus = np.maximum(floor - min_w.sum(axis=1), 0.0)
    for c in range(nc):
        take = np.minimum(extra[:, c], surplus)
        extra[:, c] -= take
        surplus -= take
    class_granted = np.zeros((nr, nc))
    for c in range(nc):
        class_granted[:, c] = fill(tree, cap, extra[:, c])
    granted += class_granted.sum(axis=1)
    capped = class_granted < extra - 1e-3
    budget = granted.copy()
    if redistribute == "headroom":
        budget += fill(tree, cap, np.maximum(own - granted, 0.0))
    if previous_w is not None and hysteresis_w > 0:
        budget = _hysteresis(tree, limit_w, budget, previous_w, hysteresis_w)
    budget = np.clip(budget, floor, own)
    load = tree.under(budget)
    return SiteAllocation(budget_w=budget, granted_w=granted, class_granted_w=class_granted,
                          class_capped=capped, load_w=load,
                          reason=_reasons(tree, limit_w, load, capped, budget, own))


def _hysteresis(tree: Tree, limit_w: Floats, new: Floats, old: Floats, h: float) -> Floats:
    """`old` where it differs from `new` by less than `h` W, unless a node would go over its
    limit: then every rack under that node takes its new budget (which fits)."""
    keep = np.abs(new - old) < h
    for _ in range(len(tree.by_depth) + 1):
        out = np.where(keep, old, new)
        over = tree.under(out) > limit_w + EPS_W
        if not over.any():
            return out
        keep &= ~tree.member[over].any(axis=0)
    return new


def _reasons(tree: Tree, limit_w: Floats, load: Floats, capped: NDArray[np.bool_],
             budget: Floats, own: Floats) -> list[str]:
    full = load >= limit_w - 1e-3
    out = []
    for r in range(len(budget)):
        if not capped[r].any():
            out.append("demand met" if budget[r] < own[r] - 1e-3 else "own feed limit")
            continue
        n = int(tree.rack_node[r])
        why = "own feed limit"
        if not full[n]:
            n = int(tree.parent[n])
            while n >= 0 and not full[n]:
                n = int(tree.parent[n])
            why = f"{tree.kind[n]} {tree.ids[n]} at its limit" if n >= 0 else "supply"
        out.append(f"capped: {why}")
    return out


def dispatch(tree: Tree, limit_w: Floats, target_w: Floats, committed_w: Floats) -> Floats:
    """The budgets to send now (W per rack): each decrease in full; increases only as far as
    every node's limit holds with every rack counted at the most it may still be obeying
    (`committed_w`: the largest unexpired, unsuperseded lease per rack)."""
    send = np.minimum(target_w, committed_w)
    cap = limit_w - tree.under(np.maximum(committed_w, send))
    up = np.maximum(target_w - committed_w, 0.0)
    if up.any():
        send = np.where(up > 0, committed_w + fill(tree, cap, up), send)
    return send
