"""Reconfiguration: the IEEE-33 optimum and configuration count, no diverged configuration
ranked, and agreement with brute force on random meshed networks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from powerflow.grid import batch
from powerflow.grid.branch_and_bound import branch_and_bound
from powerflow.grid.branchflow import branchflow_data
from powerflow.grid.case import CaseError
from powerflow.grid.cases import load_case
from powerflow.grid.exchange import search
from powerflow.grid.loadflow import is_radial, solve_radial
from powerflow.grid.reconfiguration import reconfigure
from powerflow.grid.relaxation import Relaxation
from powerflow.grid.topology import count_radial, enumerate_radial
from tests.grid.netgen import random_case


@pytest.fixture(scope="module")
def ieee33():
    case = load_case("ieee33")
    sets = enumerate_radial(case)
    return case, sets, batch.evaluate(case, sets)


def test_ieee33_has_50751_radial_configurations(ieee33) -> None:
    case, sets, _ = ieee33
    assert count_radial(case) == 50751  # matrix-tree theorem
    assert len(sets) == 50751 and len(np.unique(sets, axis=0)) == 50751
    rng = np.random.default_rng(1)
    for row in sets[rng.choice(len(sets), 200, replace=False)]:
        assert is_radial(case.with_open(list(row)))


def test_ieee33_minimum_loss_configuration(ieee33) -> None:
    case, _, _ = ieee33
    res = reconfigure(case, top_k=2)
    assert [b + 1 for b in res.best.open_branches] == [7, 9, 14, 32, 37]
    assert res.best.loss_kw == pytest.approx(139.551, abs=5e-4)
    assert res.best.vmin_pu == pytest.approx(0.93782, abs=5e-6) and res.best.flow.vmin_bus == 32
    assert [b + 1 for b in res.top[1].open_branches] == [7, 9, 14, 28, 32]
    assert res.top[1].loss_kw == pytest.approx(139.978, abs=5e-4)
    assert res.radial_configurations == res.evaluated == 50751 and res.optimality_gap == 0.0


def test_no_configuration_reaches_095_pu(ieee33) -> None:
    res = reconfigure(ieee33[0], vmin=0.95)
    assert res.best is None and "0.95" in res.message


def test_batch_results_are_exact_solutions_and_failures_are_not(ieee33) -> None:
    case, sets, res = ieee33
    assert 6000 <= (~res.converged).sum() <= 6600  # configurations without a solution
    rng = np.random.default_rng(2)
    for i in rng.choice(np.flatnonzero(res.converged), 300, replace=False):
        exact = solve_radial(case.with_open(list(sets[i])))
        assert exact.converged
        assert exact.loss.real == pytest.approx(res.loss_pu[i], rel=1e-6)
        assert exact.vmin_pu == pytest.approx(res.vmin_pu[i], abs=1e-7)
    for i in rng.choice(np.flatnonzero(~res.converged), 200, replace=False):
        assert np.isnan(res.loss_pu[i])
        assert not solve_radial(case.with_open(list(sets[i]))).converged


def brute_force(case):
    m = case.n_branch - (case.n_bus - 1)
    best = None
    count = 0
    for opened in itertools.combinations(range(case.n_branch), m):
        c = case.with_open(list(opened))
        if not is_radial(c):
            continue
        count += 1
        r = solve_radial(c)
        if r.converged and (best is None or r.loss_kw < best[1]):
            best = (opened, r.loss_kw)
    return best, count


@pytest.mark.parametrize("seed", range(8))
def test_enumeration_agrees_with_brute_force(seed: int) -> None:
    case = random_case(seed, n=11, ties=3, dc=seed % 2 == 1)
    (opened, loss), count = brute_force(case)
    res = reconfigure(case)
    assert res.radial_configurations == count == len(enumerate_radial(case))
    assert res.best.open_branches == opened
    assert res.best.loss_kw == pytest.approx(loss, rel=1e-9)


@pytest.mark.parametrize("method", ["misocp", "scip"])
@pytest.mark.parametrize("seed", range(3))
def test_misocp_and_branch_exchange_agree_with_enumeration(seed: int, method: str) -> None:
    case = random_case(100 + seed, n=12, ties=3)
    exact = reconfigure(case)
    mi = reconfigure(case, method=method, time_limit=30)
    assert mi.best.open_branches == exact.best.open_branches
    assert mi.optimality_gap < 1e-3 and mi.extra["proved_optimal"] == 1.0
    assert mi.extra["lower_bound_kw"] <= exact.best.loss_kw * (1 + 1e-6)
    opened, loss, _ = search(case)
    assert tuple(opened) == exact.best.open_branches


@pytest.mark.parametrize("workers", [1, 2])
def test_branch_and_bound_proves_the_ieee33_optimum_from_a_poor_start(ieee33, workers: int) -> None:
    case, _, _ = ieee33
    exact = reconfigure(case)
    # the case's own configuration as the incumbent: the search has to find the optimum itself
    out = branch_and_bound(case, tuple(int(b) for b in np.flatnonzero(~case.closed)),
                           time_limit=60, workers=workers)
    assert out.proved and out.open_branches == exact.best.open_branches
    assert out.flow.loss_kw == pytest.approx(exact.best.loss_kw, rel=1e-9)
    assert exact.best.loss_kw * (1 - 1e-3) <= out.lower_bound_kw <= exact.best.loss_kw * (1 + 1e-9)
    assert out.nodes > 1


def test_pseudocosts_count_a_gain_only_up_to_what_prunes() -> None:
    """A child whose bound went past the cutoff is pruned however far past: its gain counts
    as the room its parent had, so one outlier (an infeasible child, a dual bound through a
    big-M row) does not outweigh every ordinary branching of its bus."""
    from powerflow.grid.branch_and_bound import _Pseudocosts

    pc = _Pseudocosts(3)
    pc.learn(1, 0.5, [0.002, 40.0], room=0.01)  # the second child "gained" 40 p.u.
    pc.learn(2, 0.5, [0.004, 0.006], room=0.01)
    lo, hi = pc.rates()
    assert lo[1] == pytest.approx(0.004) and hi[1] == pytest.approx(0.02)  # 0.01 / 0.5
    assert hi[2] == pytest.approx(0.012) and hi[1] < 2 * hi[2]
    pc.learn(2, 0.5, [1.0], room=-0.001)  # the cutoff moved past the parent: nothing learnt
    assert pc.n[2] == 1
    assert pc.rates()[0][0] == pytest.approx((0.004 + 0.008) / 2)  # unseen bus: the average


@pytest.mark.parametrize("seed", range(6))
def test_relaxation_bound_never_exceeds_the_optimum(seed: int) -> None:
    """The root bound (no branching) is a true lower bound, on AC and DC networks."""
    case = random_case(200 + seed, n=12, ties=3, dc=seed % 2 == 1)
    exact = reconfigure(case)
    root = Relaxation(branchflow_data(case)).solve({})
    assert root.status == "solved"
    assert root.bound_pu * case.base_mva * 1e3 <= exact.best.loss_kw * (1 + 1e-6)
    out = branch_and_bound(case, None, time_limit=0.0, workers=1)
    assert out.lower_bound_kw <= exact.best.loss_kw * (1 + 1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_a_bound_from_the_roots_dual_never_exceeds_the_node_optimum(seed: int) -> None:
    """A node's bound from an ancestor's dual (no solve) is a true lower bound: never above
    the least loss of the radial configurations the node holds, found by enumerating them
    all (the exact load flow of each); never above the node's own solve (within the
    solver's gap tolerance); and worth having: some fixings against the root's optimum are
    priced above the root's bound. The arcs a node's dual fixes against a cutoff (reduced-
    cost fixing) are kept by every configuration of the node under the cutoff."""
    case = random_case(400 + seed, n=14, ties=4)
    d = branchflow_data(case)
    relax = Relaxation(d)
    root = relax.solve({})
    sets = enumerate_radial(case)
    res = batch.evaluate(case, sets)
    trees = [(_arcs_of_tree(d, {int(x) for x in sets[i]}), float(res.loss_pu[i]))
             for i in range(len(sets)) if res.converged[i]]
    into = [[int(k) for k in d.into(i) if not d.arc_fixed[k]] for i in range(d.n_node)]
    multi = [i for i, ks in enumerate(into) if len(ks) >= 2]
    rng = np.random.default_rng(seed)
    raised = implied = 0
    for _ in range(30):
        fixed: dict[int, bool] = {}
        for bus in rng.choice(multi, size=min(len(multi), int(rng.integers(1, 4))),
                              replace=False):
            k = int(rng.choice(into[bus]))
            fixed.update({j: j == k for j in into[bus]})
        cheap = relax.bound_from(root, fixed)
        held = [loss for arcs, loss in trees if all(arcs[k] == v for k, v in fixed.items())]
        if held:
            assert cheap <= min(held) * (1 + 1e-9), (fixed, cheap, min(held))
        node = relax.solve(fixed)
        if node.status == "solved":
            # the solve stops within its absolute gap tolerance (1e-6 p.u.) of the optimum
            assert cheap <= node.bound_pu + relax.settings.tol_gap_abs, (fixed, cheap)
            raised += cheap > root.bound_pu * (1 + 1e-3)
            # what fixing one more arc adds to the dual bound, as the branching prices it
            prices = relax.fixing_prices(node)
            assert prices is not None
            at = -float(relax.rhs(fixed) @ node.dual)
            for k in [k for k in range(d.n_arc) if not d.arc_fixed[k] and k not in fixed][:5]:
                for v, add in ((True, prices[0][k]), (False, prices[1][k])):
                    got = -float(relax.rhs({**fixed, k: v}) @ node.dual)
                    assert add >= -1e-12 and got == pytest.approx(at + add, rel=1e-9, abs=1e-12)
            # reduced-cost fixing from the node's dual: every configuration of the node
            # under the cutoff keeps the arcs it fixes; what it leaves out is not under it
            for q in (0.1, 0.5):
                if not held:
                    break
                cutoff = float(np.quantile(held, q))
                more, left = relax.implied(node, fixed, cutoff)
                under = [arcs for arcs, loss in trees if loss < cutoff
                         and all(arcs[k] == v for k, v in fixed.items())]
                assert left >= cutoff
                if more is None:
                    assert not under, (fixed, cutoff)
                    continue
                implied += len(more)
                for arcs in under:
                    assert all(arcs[k] == v for k, v in more.items()), (fixed, more)
    assert raised > 0 and implied > 0


def test_voltage_limit_is_kept_by_the_search() -> None:
    case = random_case(300, n=12, ties=3)
    free = reconfigure(case)
    vmin = round(free.best.vmin_pu + 0.002, 4)
    exact = reconfigure(case, vmin=vmin)
    mi = reconfigure(case, vmin=vmin, method="misocp", time_limit=30)
    if exact.best is None:
        assert mi.best is None
    else:
        assert mi.best.open_branches == exact.best.open_branches and mi.best.vmin_pu >= vmin


def test_too_large_to_enumerate_is_said_clearly() -> None:
    with pytest.raises(CaseError, match="too many to enumerate"):
        enumerate_radial(load_case("examples/cases/case118zh.m"), limit=1000)


def _arcs_of_tree(d, opened: set[int]) -> dict[int, bool]:
    """Activity of every switchable arc for the radial configuration with `opened` branches:
    an arc is active when its branch is closed and it points away from the feed."""
    adj: dict[int, list[int]] = {}
    for k in range(d.n_arc):
        if int(d.arc_branch[k]) not in opened:
            adj.setdefault(int(d.arc_tail[k]), []).append(k)
    active, seen, todo = set(), {0}, [0]
    while todo:
        u = todo.pop()
        for k in adj.get(u, []):
            h = int(d.arc_head[k])
            if h not in seen:
                seen.add(h)
                active.add(k)
                todo.append(h)
    assert len(seen) == d.n_node
    return {k: k in active for k in range(d.n_arc) if not d.arc_fixed[k]}


def test_every_radial_configuration_stays_feasible_in_the_relaxation(ieee33) -> None:
    """The model's strengthening rows (an active arc delivers at least its head's load) cut
    off no radial configuration: with the arcs of one fixed, the relaxation is that
    configuration's exact load flow, never above it."""
    case, _, res = ieee33
    d = branchflow_data(case)
    relax = Relaxation(d)
    rng = np.random.default_rng(7)
    order = np.argsort(np.where(res.converged, res.loss_pu, np.inf))
    picks = list(order[:3]) + list(rng.choice(len(order), 12, replace=False))
    for i in picks:
        if not res.converged[i]:
            continue
        opened = {int(b) for b in res.open_branches[i]}
        node = relax.solve(_arcs_of_tree(d, opened))
        assert node.status == "solved"
        loss = solve_radial(case.with_open(sorted(opened))).loss_kw
        assert loss * (1 - 1e-4) <= node.bound_pu * d.base_kw <= loss * (1 + 1e-6)


def test_case70da_is_proved_optimal_by_both_searches() -> None:
    """A network too large to enumerate (3.8e8 radial configurations): our search and SCIP,
    on the same model, reach the same configuration and prove it within 0.1 %."""
    case = load_case("examples/cases/case70da.m")
    ours = reconfigure(case, method="misocp", time_limit=60)
    scip = reconfigure(case, method="scip", time_limit=60)
    for r in (ours, scip):
        assert r.extra["proved_optimal"] == 1.0 and r.optimality_gap < 1e-3
    assert ours.best.open_branches == scip.best.open_branches
    assert ours.best.loss_kw == pytest.approx(scip.best.loss_kw, rel=1e-9)
