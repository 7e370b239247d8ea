"""Reconfiguration through a day: a configuration per interval, least energy lost plus a cost
per switching operation, within limits on operations per day and per switch.

Profiles (CSV, one row per interval): a first column naming the interval (a time), then
scale factors of the case's demand: `load` (every load), `sgen` (every static generator of
a pandapower net), or one element of a pandapower net (`load.12`, `sgen.3`: its p_mw and
q_mvar times the factor; an element named overrides `load`/`sgen`). Every interval lasts
`interval_h` hours (default: a day divided by the rows).

The plan is a shortest path over (interval, configuration, operations used): each interval
costs its configuration's loss times its length (kWh), each change costs `switch_cost_kwh`
per switching operation (a branch opened or closed is one). Candidates: every radial
configuration when there are at most `exact_limit` (the plan is then exact: every possible
plan was weighed); else, when every configuration can still be evaluated in every interval,
each interval's ten best and the base, with `lower_bound_kwh` (every interval at its best of
all, switching free) bounding what the plan leaves on the table; else the base and each
interval's branch-exchange optimum with its ten best neighbours there (no bound). The plan is the best over the candidates. A per-switch limit is kept
on each state's best path (exact when it does not bind; a restriction when it does).

Reported beside the plan: the base configuration all day, and the best single static
configuration (of the candidates). Units: kW, kWh, h.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from powerflow.grid import batch
from powerflow.grid.case import Case, CaseError
from powerflow.grid.topology import count_radial, enumerate_radial

TOP_PER_INTERVAL = 10  # when every configuration is weighed but too many for the plan
EXACT_LIMIT = 400  # radial configurations weighed in every interval for an exact plan (K^2 a step)


@dataclass(frozen=True)
class Profiles:
    labels: tuple[str, ...]  # per interval
    p_load: NDArray[np.float64]  # T x n_bus, p.u.
    q_load: NDArray[np.float64]
    interval_h: float


@dataclass(frozen=True)
class DayPlan:
    open_sets: list[tuple[int, ...]]  # per interval, open branches (0-based)
    loss_kw: list[float]  # per interval
    energy_kwh: float  # lost over the day by the plan
    operations: int  # switching operations over the day
    per_switch: dict[int, int]  # branch -> operations
    cost_kwh: float  # energy + operations x switch cost
    base_kwh: float | None  # the base configuration all day (None: infeasible somewhere)
    static_kwh: float | None  # the best single configuration all day
    static_open: tuple[int, ...] | None
    lower_bound_kwh: float | None  # no plan loses less (every interval at its best, switching
    # free, over every radial configuration; None where they were not all weighed)
    exact: bool  # every radial configuration was a candidate (and no per-switch limit bound)
    candidates: int
    extra: dict[str, Any] = field(default_factory=dict)


def read_profiles(path: str | Path, case: Case, source: Any = None,
                  interval_h: float | None = None) -> Profiles:
    """Profiles for `case` from the CSV at `path` (see the module); `source` is the
    pandapower net and map the case came from (for per-element columns). CaseError names
    the file, the row and the column of anything wrong."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CaseError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise CaseError(f"{path}: not a text file (UTF-8 expected; byte 0x{e.object[e.start]:02x}"
                        f" at offset {e.start})") from None
    rows = list(csv.reader(text.splitlines()))
    if len(rows) < 2:
        raise CaseError(f"{path}: expected a header and at least one interval")
    head = [h.strip() for h in rows[0]]
    if len(head) < 2:
        raise CaseError(f"{path}: header: expected a time column and scale columns")
    elems = None
    if source is not None:
        from powerflow.grid.pandapower_io import net_injections

        elems = net_injections(source.net, source.map, case.base_mva)
    names = {(k, i) for k, i, *_ in (elems or [])}
    for col in head[1:]:
        kind, _, idx = col.partition(".")
        if col in ("load", "sgen") and (col == "load" or elems is not None):
            continue
        if kind in ("load", "sgen") and idx.isdigit() and (kind, int(idx)) in names:
            continue
        raise CaseError(f"{path}: header: column {col!r}: expected load"
                        + (", sgen, or load.N / sgen.N naming an element of the net in service"
                           if elems is not None else " (sgen and per-element columns need a "
                           "pandapower net)"))
    labels, ps, qs = [], [], []
    for r, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(head):
            raise CaseError(f"{path}: row {r}: {len(row)} values for {len(head)} columns")
        vals: dict[str, float] = {}
        for col, cell in zip(head[1:], row[1:], strict=True):
            try:
                v = float(cell)
            except ValueError:
                raise CaseError(f"{path}: row {r}: column {col!r}: {cell!r} is not a number"
                                ) from None
            if not (np.isfinite(v) and 0.0 <= v <= 10.0):
                raise CaseError(f"{path}: row {r}: column {col!r}: {cell!r} is out of range: "
                                "expected a scale factor from 0 to 10")
            vals[col] = v
        labels.append(row[0].strip())
        if elems is None:
            f = vals.get("load", 1.0)
            ps.append(case.p_load * f)
            qs.append(case.q_load * f)
            continue
        pb = np.zeros(case.n_bus)
        qb = np.zeros(case.n_bus)
        for ek, ei, bus, pe, qe in elems:
            scale = vals.get(f"{ek}.{ei}", vals.get(ek if ek != "storage" else "load", 1.0))
            pb[bus] += pe * scale
            qb[bus] += qe * scale
        ps.append(pb)
        qs.append(qb)
    if not labels:
        raise CaseError(f"{path}: no interval")
    h = interval_h if interval_h is not None else 24.0 / len(labels)
    if not 0 < h <= 24:
        raise CaseError(f"interval of {h} h: expected more than 0 and at most 24")
    return Profiles(tuple(labels), np.array(ps), np.array(qs), h)


def _losses(case: Case, prof: Profiles, sets: NDArray[np.int64],
            vmin: float | None) -> NDArray[np.float64]:
    """Loss (kW) of every candidate in every interval (inf: no solution or below vmin)."""
    out = np.full((len(prof.labels), len(sets)), np.inf)
    for t in range(len(prof.labels)):
        res = batch.evaluate(case.with_loads(prof.p_load[t], prof.q_load[t]), sets)
        ok = res.converged & (res.vmin_pu >= (vmin if vmin is not None else 0.0) - 1e-9)
        out[t, ok] = res.loss_pu[ok] * case.base_mva * 1e3
    return out


def _candidates(case: Case, prof: Profiles, vmin: float | None, exact_limit: int,
                time_limit: float, top: int = TOP_PER_INTERVAL
                ) -> tuple[NDArray[np.int64], bool, NDArray[np.float64] | None]:
    """Candidate configurations, whether they are all the radial ones (an exact plan), and
    when every radial configuration was weighed, each interval's least loss over all of
    them (kW; for the lower bound). Every one when few enough; else, when they can be
    enumerated, each interval's `top` best and the base; else the base, and each interval's
    branch-exchange optimum with its `top` best neighbours."""
    from powerflow.grid.reconfiguration import ENUMERATION_LIMIT

    total = count_radial(case)
    if total <= exact_limit:
        return enumerate_radial(case, 10 * exact_limit), True, None
    base = tuple(sorted(int(b) for b in np.flatnonzero(~case.closed)))
    if total <= ENUMERATION_LIMIT:
        every = enumerate_radial(case, ENUMERATION_LIMIT)
        loss = _losses(case, prof, every, vmin)
        keep = set(np.argsort(loss, axis=1)[:, :top].ravel().tolist())
        keep |= {k for k in range(len(every)) if tuple(every[k]) == base}
        return every[sorted(keep)], False, loss.min(axis=1)
    from powerflow.grid.exchange import neighbours
    from powerflow.grid.reconfiguration import reconfigure

    found = {base}
    per = max(time_limit / len(prof.labels), 1.0)
    for t in range(len(prof.labels)):
        c = case.with_loads(prof.p_load[t], prof.q_load[t])
        r = reconfigure(c, top_k=1, vmin=vmin, method="exchange", time_limit=per)
        if r.best is not None:
            best = np.array(sorted(r.best.open_branches), np.int64)
            found.add(tuple(best.tolist()))
            # and its best neighbours there: the plan may prefer one a switch pair away
            nb = neighbours(c, best)
            if len(nb):
                ev = batch.evaluate(c, nb)
                score = np.where(ev.converged, ev.loss_pu, np.inf)
                for k in np.argsort(score)[:top]:
                    if np.isfinite(score[k]):
                        found.add(tuple(sorted(int(b) for b in nb[k])))
    m = max(len(x) for x in found)
    return np.array(sorted(x for x in found if len(x) == m), np.int64), False, None


def plan_day(case: Case, prof: Profiles, switch_cost_kwh: float = 0.0,
             max_ops_day: int | None = None, max_ops_switch: int | None = None,
             vmin: float | None = None, exact_limit: int = EXACT_LIMIT,
             time_limit: float = 120.0) -> DayPlan:
    """The day's plan (see the module). CaseError when no configuration is feasible in
    some interval."""
    sets, exact, floor_kw = _candidates(case, prof, vmin, exact_limit, time_limit)
    loss = _losses(case, prof, sets, vmin)
    T, K = loss.shape
    bad = np.flatnonzero(~np.isfinite(loss).any(axis=1))
    if len(bad):
        raise CaseError(f"{case.name}: interval {prof.labels[bad[0]]}: no configuration has a "
                        "load-flow solution within the voltage limits")
    energy = loss * prof.interval_h
    # switching operations between candidates: branches open in one and closed in the other
    member = np.zeros((K, case.n_branch), bool)
    member[np.repeat(np.arange(K), sets.shape[1]), sets.ravel()] = True
    dist = (member[:, None, :] != member[None, :, :]).sum(axis=2)
    base = tuple(int(b) for b in np.flatnonzero(~case.closed))
    base_k = next((k for k in range(K) if tuple(sets[k]) == tuple(sorted(base))), None)
    L = 1 if max_ops_day is None else max_ops_day + 1  # operations used: 0 .. max
    cost = np.full((K, L), np.inf)  # least cost of intervals 0..t ending in (k, u used)
    cost[:, 0] = energy[0]
    counts = np.zeros((K, L, case.n_branch), np.int16) if max_ops_switch is not None else None
    back: list[NDArray[np.int64]] = []  # per t >= 1: the predecessor (j * L + u) of each state
    kk = np.broadcast_to(np.arange(K)[None, :], (K, K))
    jj = np.broadcast_to(np.arange(K)[:, None], (K, K))
    bound_hit = False
    for t in range(1, T):
        new = np.full(K * L, np.inf)
        arg = np.full(K * L, -1, np.int64)
        for u_prev in range(L):
            col = cost[:, u_prev]
            live = np.isfinite(col)
            if not live.any():
                continue
            m = col[:, None] + switch_cost_kwh * dist + energy[t][None, :]  # j -> k
            m[~live, :] = np.inf
            u_new = u_prev + dist if L > 1 else np.zeros_like(dist)
            m[u_new >= L] = np.inf
            if counts is not None:  # a switch at its limit on j's path may not move again
                for j in np.flatnonzero(live):
                    blocked = counts[j, u_prev] >= max_ops_switch
                    if blocked.any():
                        moves = (member[:, blocked] != member[j, blocked]).any(axis=1)
                        if moves.any():
                            bound_hit = bound_hit or bool(np.isfinite(m[j, moves]).any())
                            m[j, moves] = np.inf
            vals = m.ravel()
            ok = np.isfinite(vals)
            if not ok.any():
                continue
            tgt = (kk * L + np.minimum(u_new, L - 1)).ravel()[ok]
            src = (jj * L + u_prev).ravel()[ok]
            vals = vals[ok]
            order = np.lexsort((vals, tgt))  # per target, the least value first
            tgt_s = tgt[order]
            first = np.ones(len(order), bool)
            first[1:] = tgt_s[1:] != tgt_s[:-1]
            pick = order[first]
            better = vals[pick] < new[tgt[pick]]
            new[tgt[pick][better]] = vals[pick][better]
            arg[tgt[pick][better]] = src[pick][better]
        if counts is not None:
            nc = np.zeros_like(counts)
            for s_ in np.flatnonzero(arg >= 0).tolist():
                kn, un = divmod(s_, L)
                jp, upp = divmod(int(arg[s_]), L)
                nc[kn, un] = counts[jp, upp] + (member[jp] != member[kn])
            counts = nc
        cost = new.reshape(K, L)
        back.append(arg.reshape(K, L))
    end = int(np.argmin(cost))
    total = float(cost.ravel()[end])
    if not np.isfinite(total):
        raise CaseError(f"{case.name}: no plan keeps within the limits on operations")
    path = [end // L]
    state = end
    for arg in reversed(back):
        state = int(arg.ravel()[state])
        path.append(state // L)
    path.reverse()
    per_switch: dict[int, int] = {}
    for a, b in zip(path, path[1:]):
        for br in np.flatnonzero(member[a] != member[b]):
            per_switch[int(br)] = per_switch.get(int(br), 0) + 1
    ops = sum(per_switch.values())
    day = energy.sum(axis=0)
    s_k = int(np.argmin(day))
    return DayPlan(
        open_sets=[tuple(int(b) for b in sets[k]) for k in path],
        loss_kw=[float(loss[t, k]) for t, k in enumerate(path)],
        energy_kwh=float(sum(energy[t, k] for t, k in enumerate(path))),
        operations=ops, per_switch=per_switch, cost_kwh=total,
        base_kwh=None if base_k is None or not np.isfinite(day[base_k]) else float(day[base_k]),
        static_kwh=float(day[s_k]) if np.isfinite(day[s_k]) else None,
        static_open=tuple(int(b) for b in sets[s_k]) if np.isfinite(day[s_k]) else None,
        lower_bound_kwh=(float(energy.min(axis=1).sum()) if floor_kw is None and exact
                         else float((floor_kw * prof.interval_h).sum()) if floor_kw is not None
                         else None),
        exact=exact and not bound_hit,
        candidates=K)
