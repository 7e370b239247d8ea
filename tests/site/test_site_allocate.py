"""Site allocation against independent oracles: every level's total is the most a linear
program (SciPy's HiGHS) finds under the tree with the levels above it fixed; no breaker over
its limit; CapMaestro's priority rule under every constrained breaker; break-before-make
dispatch never lets a breaker's committed budgets rise above its limit; hysteresis keeps the
tree within its limits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linprog

from powerflow.model.site import parse_site
from powerflow.site.allocate import allocate, compile_tree, dispatch


def random_site(rng: np.random.Generator, n_racks: int) -> dict:
    breakers = [{"id": "sb", "parent": "f", "limit_w": float(rng.uniform(2e3, 3e4))}]
    for k in range(int(rng.integers(1, 6))):
        parent = breakers[int(rng.integers(0, len(breakers)))]["id"]
        breakers.append({"id": f"b{k}", "parent": parent, "limit_w": float(rng.uniform(5e2, 1e4))})
    racks = []
    for k in range(n_racks):
        racks.append({"id": f"r{k}", "parent": breakers[int(rng.integers(0, len(breakers)))]["id"],
                      "feed_limit_w": float(rng.uniform(1e3, 4e3)), "floor_w": 0.0})
    raw = {"site": {"name": "t"}, "feed": [{"id": "f", "limit_w": float(rng.uniform(3e3, 4e4))}],
           "breaker": breakers, "rack": racks,
           "class": [{"name": "hi", "priorities": [1, 2, 3]}, {"name": "mid", "priorities": [4, 5, 6]},
                     {"name": "lo", "priorities": [7, 8, 9, 10]}]}
    # floors that fit everywhere: a small share of the tightest limit over each rack
    site = parse_site(raw)
    tree = compile_tree(site)
    tight = np.array([min(tree.limit_w[tree.member[:, k]]) for k in range(n_racks)])
    for k, r in enumerate(racks):
        r["floor_w"] = float(rng.uniform(0, 0.5)) * tight[k] / n_racks
    return raw


def demands(rng: np.random.Generator, n: int, nc: int) -> tuple[np.ndarray, np.ndarray]:
    p95 = rng.uniform(0, 1200, size=(n, nc)) * (rng.random((n, nc)) < 0.8)
    mn = p95 * rng.uniform(0, 0.5, size=(n, nc))
    return mn, p95


def lp_max(tree, limit, fixed: np.ndarray, req: np.ndarray) -> float:
    """The most the tree can grant of `req` (W per rack) on top of `fixed`."""
    n = len(req)
    a_ub = tree.member.astype(float)
    b_ub = limit - tree.member.astype(float) @ fixed
    res = linprog(-np.ones(n), A_ub=a_ub, b_ub=b_ub, bounds=list(zip(np.zeros(n), req)),
                  method="highs")
    assert res.status == 0
    return -res.fun


@pytest.mark.parametrize("seed", range(12))
def test_each_level_takes_the_most_the_tree_allows_and_no_limit_is_exceeded(seed) -> None:
    rng = np.random.default_rng(seed)
    site = parse_site(random_site(rng, int(rng.integers(2, 25))))
    tree = compile_tree(site)
    nc = len(site.classes)
    floor = np.array([r.floor_w for r in site.racks])
    mn, p95 = demands(rng, len(site.racks), nc)
    a = allocate(tree, tree.limit_w, floor, mn, p95, redistribute="none")
    assert np.all(a.load_w <= tree.limit_w + 1e-6)
    assert np.all(a.budget_w >= floor - 1e-9)
    # level by level, the totals are what the LP finds with the levels above fixed
    fixed = np.minimum(floor, tree.limit_w[tree.rack_node])
    base = np.maximum(mn.sum(axis=1) - floor, 0.0)
    got_base = lp_max(tree, tree.limit_w, fixed, base)
    extra = np.maximum(p95 - mn, 0.0)
    surplus = np.maximum(floor - mn.sum(axis=1), 0.0)
    for c in range(nc):
        take = np.minimum(extra[:, c], surplus)
        extra[:, c] -= take
        surplus -= take
    granted_base = a.granted_w - a.class_granted_w.sum(axis=1) - fixed
    assert granted_base.sum() == pytest.approx(got_base, abs=1e-3)
    fixed = fixed + granted_base
    for c in range(nc):
        best = lp_max(tree, tree.limit_w, fixed, extra[:, c])
        assert a.class_granted_w[:, c].sum() == pytest.approx(best, abs=1e-3), c
        fixed = fixed + a.class_granted_w[:, c]


@pytest.mark.parametrize("seed", range(12))
def test_no_class_is_capped_while_a_lower_class_under_the_same_full_breaker_gets_more(seed):
    rng = np.random.default_rng(100 + seed)
    site = parse_site(random_site(rng, int(rng.integers(2, 25))))
    tree = compile_tree(site)
    floor = np.array([r.floor_w for r in site.racks])
    mn, p95 = demands(rng, len(site.racks), len(site.classes))
    a = allocate(tree, tree.limit_w, floor, mn, p95, redistribute="none")
    full = a.load_w >= tree.limit_w - 1e-3
    for r, c in zip(*np.nonzero(a.class_capped), strict=True):
        # the rack is capped by a full node on its path; under that node no lower class
        # anywhere got anything above its minimum
        path = np.flatnonzero(tree.member[:, r] & full)
        assert len(path), (r, c)
        ok = [np.all(a.class_granted_w[tree.member[n], c + 1:] <= 1e-6) for n in path]
        assert any(ok), (r, c)


def test_headroom_lends_unused_budget_up_to_the_racks_own_limits() -> None:
    rng = np.random.default_rng(3)
    site = parse_site(random_site(rng, 10))
    tree = compile_tree(site)
    floor = np.array([r.floor_w for r in site.racks])
    mn, p95 = demands(rng, 10, 3)
    lean = allocate(tree, tree.limit_w, floor, mn, p95, redistribute="none")
    lent = allocate(tree, tree.limit_w, floor, mn, p95, redistribute="headroom")
    assert np.allclose(lean.granted_w, lent.granted_w)
    assert np.all(lent.budget_w >= lean.budget_w - 1e-9)
    assert np.all(lent.load_w <= tree.limit_w + 1e-6)
    # no more can be lent: every rack is at its own limit or under a full node
    full = lent.load_w >= tree.limit_w - 1e-3
    for r in range(10):
        assert np.any(tree.member[:, r] & full)


def test_a_lost_feed_moves_its_racks_under_the_backup_within_its_overload_allowance() -> None:
    from powerflow.model.site import load_site
    from tests.conftest import ROOT
    site = load_site(ROOT / "examples" / "sites" / "two-pdus.toml")
    tree = compile_tree(site, frozenset({"utility-a"}))
    b = tree.ids.index("utility-b")
    sb = tree.ids.index("switchboard")
    floor = np.array([r.floor_w for r in site.racks])
    p95 = np.full((4, 3), 700.0)          # 8.4 kW asked, the PDUs pass 7.2 kW
    # the file's allowance: 5 kW x 1.4 = 7 kW, as much as the switchboard passes
    limit = tree.limit_w.copy()
    limit[b] *= 1 + tree.overload_frac[b]
    assert limit[b] == pytest.approx(7000.0)
    a = allocate(tree, limit, floor, p95 * 0.2, p95)
    assert a.load_w[b] == pytest.approx(min(limit[b], limit[sb]))
    # a smaller allowance (25 %) binds below the switchboard, and every rack is told why
    limit[b] = tree.limit_w[b] * 1.25
    a = allocate(tree, limit, floor, p95 * 0.2, p95)
    assert a.load_w[b] <= limit[b] + 1e-6
    assert a.load_w[b] == pytest.approx(6250.0)
    assert all("utility-b" in why for why in a.reason)


@pytest.mark.parametrize("seed", range(10))
def test_dispatch_makes_only_after_break(seed) -> None:
    rng = np.random.default_rng(200 + seed)
    site = parse_site(random_site(rng, 12))
    tree = compile_tree(site)
    floor = np.array([r.floor_w for r in site.racks])
    own = tree.limit_w[tree.rack_node]
    mn, p95 = demands(rng, 12, 3)
    old = allocate(tree, tree.limit_w, floor, mn, p95).budget_w
    mn2, p952 = demands(rng, 12, 3)
    new = allocate(tree, tree.limit_w, floor, mn2, p952).budget_w
    send = dispatch(tree, tree.limit_w, new, old)
    down = new <= old
    assert np.allclose(send[down], new[down])  # decreases in full at once
    assert np.all(send <= np.maximum(new, old) + 1e-9) and np.all(send >= np.minimum(new, old) - 1e-9)
    assert np.all(send <= own + 1e-9)
    # while both old and new leases may be in force, no node is above its limit
    worst = tree.under(np.maximum(old, send))
    assert np.all(worst <= tree.limit_w + 1e-6)
    # once the decreases are acknowledged, the rest follows
    send2 = dispatch(tree, tree.limit_w, new, send)
    assert np.allclose(send2, new, atol=1e-6)


def test_hysteresis_holds_small_changes_and_never_breaks_a_limit() -> None:
    rng = np.random.default_rng(9)
    site = parse_site(random_site(rng, 15))
    tree = compile_tree(site)
    floor = np.array([r.floor_w for r in site.racks])
    mn, p95 = demands(rng, 15, 3)
    first = allocate(tree, tree.limit_w, floor, mn, p95, redistribute="none")
    jiggle = p95 * rng.uniform(0.98, 1.02, size=p95.shape)
    again = allocate(tree, tree.limit_w, floor, np.minimum(mn, jiggle), jiggle,
                     redistribute="none", previous_w=first.budget_w, hysteresis_w=50.0)
    assert np.all(again.load_w <= tree.limit_w + 1e-6)
    held = np.isclose(again.budget_w, first.budget_w)
    assert held.sum() >= 1
