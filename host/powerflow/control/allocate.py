"""The allocator: from forecasts and the rack's state to the next period's allocation.

Pure computation (no I/O). Steps, each explained in the result:

1. supply: what the converters that can run may deliver (derated, thermal margin),
   what the feed breaker allows, what the battery can add (with a hinted job's end ahead,
   its energy spread to last until then); a ramp-rate limit on the feed;
2. caps: when the P95 demand exceeds supply, devices are capped in strict priority order
   (nobody is throttled while a lower-priority device is above its minimum), with
   hysteresis and a staggered, randomised release of only as many as supply can take
   rising to their ceilings; each class above the one capped keeps
   room for its ceiling (p_max_w), or for less where a hint says a device stays low over
   the period and measurement agrees (`DeviceView.room_w`);
3. battery: keep the feed under its limit (peak shaving: the unit's own loop meets the
   feed's measured excess; a discharge is commanded only where the converters bind),
   recharge in the valleys;
4. tie switches: the normal state unless an island cannot be supplied, then the
   closures that restore supply (or, with ties = optimise, the lowest-loss state);
5. phase shedding: per island, the number of converters that minimises conversion loss
   while keeping the reserve; rotation evens out their running hours;
6. shares: conversion + distribution loss minimised by a QP (Clarabel) over the
   linearised mesh, then realised as voltage setpoints by the exact load flow, the
   highest segment held at the target voltage;
7. check: the exact load flow at the P95 demand must keep every voltage in the band and
   every converter under its limit; otherwise (or on any solver failure) the safe
   allocation — every available converter on at its safe output (Node.safe_vout: droop-centred
   on the bus voltage), sharing by droop —
   goes out instead.

Units: W, V, A, degC, s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import clarabel
import numpy as np
import scipy.sparse as sp

from powerflow.control.dcnet import DcFlow, DcNetwork, flow, realise
from powerflow.control.policy import Policy
from powerflow.model.mesh import MeshIndex
from powerflow.model.rack import Rack
from powerflow.model.arrays import Bools, Floats, Ints



@dataclass
class NodeView:
    """What the host knows of one converter node this period."""

    id: int
    available: bool  # online, no latched fault, delivering when asked to
    on: bool  # its output is on now
    limit_w: float  # derated output power limit, W (firmware's IOUT_LIMIT x bus voltage)
    temp_c: float = 25.0
    run_s: float = 0.0  # accumulated running time (for rotation)
    why: str = ""  # why it is unavailable
    reachable: bool = True  # its link is up (else the ties on its ports are taken as open:
    # a node that reboots opens them, and nobody can close them through it meanwhile)


@dataclass
class DeviceView:
    id: str
    mean_w: float  # demand forecast over the next period, W
    upper_w: float  # its P95 bound, W
    measured_w: float = 0.0
    # W the converters should be ready to carry for it though no forecast says so yet: a
    # job hinted to start soon (HintBook.prepare). Phase shedding keeps supply for it; caps
    # follow the forecast, so nothing is capped before the job draws
    ready_w: float = 0.0
    # W of room the caps keep for it while lower classes are capped (None: its p_max_w): a
    # hint that says it stays low over the period (a job's pause, after a job's end) and
    # measurement that agrees (HintBook.room). Never a cap on the device itself
    room_w: float | None = None


@dataclass
class BatteryView:
    soc: float
    capacity_wh: float
    p_charge_max_w: float
    p_discharge_max_w: float


@dataclass
class RackView:
    t: float  # s
    nodes: list[NodeView]
    devices: list[DeviceView]
    battery: BatteryView | None = None
    feed_w: float = 0.0  # measured feed draw now, W
    sag: str = ""  # why the bus is in trouble now (a node current-limited or under the band)
    feed_budget_w: float | None = None  # W a site controller leases the feed (None: no site)
    # the largest rise of the devices' total power in one period seen lately, W (the
    # controller's record; jumps of devices that move together)
    jump_w: float = 0.0
    # s until the first hinted job running now ends (HintBook.next_end; None: no hint says):
    # the battery's energy is spread to last it (BATTERY_PLAN_RATE)
    battery_last_s: float | None = None


# With a hinted job's end ahead, the caps count on at most this many times the battery's
# usable energy spread evenly until then (W). Measured on training-jobs, hinted arm, seeds
# 1-5 (bench/RESULTS.md): a battery counted on at full discharge to its floor ran empty
# about two minutes before job B ended and the caps then had no buffer under the feed
# (32.40 Wh unmet); spread until the end, 1x left 44.51 Wh, 3x 31.69, 5x 31.50, 8x 31.39,
# 25x 31.40, 60x 31.51. So the rule only tapers the last of the energy: at 8x, the full
# rate holds until the battery's usable energy falls under an eighth of what it would give
# at full rate until the end. Not applied without a hint: with a fixed 300-s or 600-s
# horizon in its place, the predictive and oracle arms lost 1-3 Wh (a reserve never spent).
BATTERY_PLAN_RATE = 8.0


def battery_allowance_w(bat: BatteryView, soc_min: float, last_s: float) -> float:
    """W of discharge the caps may count on when the battery's energy above `soc_min` must
    last `last_s` (s): its full rate, tapered as that energy runs short (BATTERY_PLAN_RATE)."""
    usable_j = max(bat.soc - soc_min, 0.0) * bat.capacity_wh * 3600.0
    return min(bat.p_discharge_max_w, BATTERY_PLAN_RATE * usable_j / last_s)


@dataclass
class Memory:
    """What the allocator carries from one period to the next."""

    capped: dict[str, float] = field(default_factory=dict)  # device -> cap (W) in force
    on: set[int] = field(default_factory=set)
    last_rotation_t: float = 0.0
    last_feed_plan_w: float | None = None
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))


@dataclass
class Allocation:
    t: float
    vref: dict[int, float | None]  # V per node; None = off
    closed: list[bool]  # per branch of the rack file
    caps: dict[str, float | None]  # W per device; None = uncapped
    battery_w: float  # W, + discharging into the bus
    # W of feed draw above which the battery's own loop discharges (catches surges faster
    # than a control period)
    battery_shave_above_w: float | None
    ok: bool  # passed the load-flow check
    fallback: bool  # the safe allocation (optimiser failed, late or unchecked)
    reason: str
    predicted: dict[str, float]
    nodes: dict[int, dict[str, Any]]
    devices: dict[str, dict[str, Any]]
    elapsed_ms: float = 0.0
    flows: list[dict[str, Any]] = field(default_factory=list)  # per branch: A from -> to
    # set by the controller: optimal | degraded (measurements disagree with the plan, a
    # converter out, a fallback) | safe (the supervisor's safe mode)
    state: str = "optimal"
    measured: dict[str, Any] = field(default_factory=dict)  # the bus as measured (V)
    alarms: int = 0  # active alarms when it was made
    # converters shed at light load, held off but ready: node -> (V it starts at, V the bus
    # must fall under for it to start on its own; protocol/SPEC.md, Standby)
    standby: dict[int, tuple[float, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"t": self.t, "state": self.state, "ok": self.ok, "fallback": self.fallback,
                "reason": self.reason, "measured": self.measured, "alarms": self.alarms,
                "elapsed_ms": round(self.elapsed_ms, 3), "battery_w": self.battery_w,
                "battery_shave_above_w": self.battery_shave_above_w,
                "closed": self.closed, "flows": self.flows, "predicted": self.predicted,
                "nodes": {str(k): v for k, v in self.nodes.items()}, "devices": self.devices}


class _SafeMode(Exception):
    """The supervisor holds the rack in safe mode: no optimisation this period."""


def loss_w(eff_x: Floats, eff_y: Floats, rating: float, p: Floats | float) -> Floats:
    """Conversion loss (W) at output power p (W) from an efficiency curve over load
    fraction; below the curve's first point the loss stays at that point's (the fixed
    losses of switching and control dominate there)."""
    x = np.maximum(np.asarray(p, float) / rating, eff_x[0])
    return x * rating * (1.0 / np.interp(x, eff_x, eff_y) - 1.0)


class Allocator:
    """Allocates one rack; `allocate(view, policy, memory)` is a pure function of its
    arguments and the rack description."""

    def __init__(self, rack: Rack) -> None:
        self.rack = rack
        self.net = DcNetwork.of(rack)
        self.node_ids = [n.id for n in rack.nodes]
        self.dev_ids = [d.id for d in rack.devices]
        mesh = MeshIndex.of(rack)
        self.dev_seg = mesh.device_seg
        self.rating = np.array([n.rating_w for n in rack.nodes])
        self.eff = [(np.array([e[0] for e in n.efficiency]), np.array([e[1] for e in n.efficiency]))
                    for n in rack.nodes]
        # converters with the same curve and rating share one vectorised loss evaluation
        self.curve_group = np.zeros(len(rack.nodes), np.int64)
        self.curves: list[tuple[Floats, Floats, float]] = []
        for k, (ex, ey) in enumerate(self.eff):
            for g, (gx, gy, gr) in enumerate(self.curves):
                if gr == self.rating[k] and np.array_equal(gx, ex) and np.array_equal(gy, ey):
                    self.curve_group[k] = g
                    break
            else:
                self.curve_group[k] = len(self.curves)
                self.curves.append((ex, ey, float(self.rating[k])))
        self.normal = np.array([b.closed for b in rack.branches])
        self.switchable = np.array([b.switch == "tie" for b in rack.branches])
        self.bat_seg = mesh.battery_seg if mesh.battery_seg is not None else -1
        # loss(p) ~ a + b p + c p^2 fitted over each converter's curve: the QP's model (the
        # constant a does not move the optimum, so only b (W/W) and c (W/W^2) are kept)
        self.qb, self.qc = np.zeros(len(rack.nodes)), np.zeros(len(rack.nodes))
        for k, (ex, ey) in enumerate(self.eff):
            p = np.linspace(ex[0], ex[-1], 40) * self.rating[k]
            coef = np.polyfit(p, loss_w(ex, ey, self.rating[k], p), 2)
            self.qc[k], self.qb[k] = max(coef[0], 1e-9), coef[1]

    # ---- helpers ---------------------------------------------------------------------
    def losses(self, ks: Ints, p: Floats) -> Floats:
        """Conversion loss (W) of converters `ks` at output powers `p` (W), vectorised."""
        ks = np.asarray(ks, np.int64)
        out = np.empty(len(ks))
        groups = self.curve_group[ks]
        for g in np.unique(groups):
            sel = groups == g
            ex, ey, rating = self.curves[int(g)]
            out[sel] = loss_w(ex, ey, rating, np.asarray(p, float)[sel])
        return out

    def _plan_limit(self, nv: NodeView, pol: Policy) -> float:
        """W a converter may be planned to carry: its derated limit, less near its heat limit."""
        t = min(max((nv.temp_c - pol.thermal_soft_c) / (pol.thermal_hard_c - pol.thermal_soft_c),
                    0.0), 1.0)
        return max(0.0, nv.limit_w * pol.max_load_frac * (1.0 - 0.5 * t))

    # ---- 2. caps ---------------------------------------------------------------------
    def _caps(self, view: RackView, pol: Policy, mem: Memory, supply: float
              ) -> tuple[dict[str, float | None], dict[str, str]]:
        devs = self.rack.devices
        prio = np.array([pol.priorities.get(d.id, d.priority) for d in devs])
        pmin = np.array([pol.p_min_w.get(d.id, d.p_min_w) for d in devs])
        pmax = np.array([pol.ceiling_w(d) for d in devs])
        want = np.clip(np.array([dv.upper_w for dv in view.devices]), 0.0, pmax)
        # the room each device is kept while others are capped: its ceiling, or less where a
        # hint says (and measurement agrees) that it stays low over the period
        room = np.array([pmax[i] if dv.room_w is None else min(max(dv.room_w, pmin[i]), pmax[i])
                         for i, dv in enumerate(view.devices)])
        binding = {d.id: "none" for d in devs}
        total = float(want.sum())
        caps: dict[str, float | None] = {d.id: (float(pmax[i]) if pmax[i] < devs[i].p_max_w
                                                else None) for i, d in enumerate(devs)}
        for i, d in enumerate(devs):
            if caps[d.id] is not None:
                binding[d.id] = "policy p_max_w"
        if total <= pol.uncap_below * supply or (not mem.capped and total <= pol.cap_at * supply):
            # release: staggered, a few per period in random order, and only as many as
            # supply can take rising to their ceilings: a capped device draws its cap, so its
            # forecast says nothing of what it will draw once free (two CPUs released at
            # once into a burst took inference-day's feed over its limit)
            order = list(mem.capped)
            mem.rng.shuffle(order)
            ceiling = {d.id: float(pmax[i]) for i, d in enumerate(devs)}
            room_left, freed = pol.cap_at * supply - total, 0
            held: dict[str, float] = {}
            for dev in order:
                rise = ceiling[dev] - mem.capped[dev]
                if freed < pol.release_per_period and rise <= room_left:
                    freed, room_left = freed + 1, room_left - rise
                    continue
                held[dev] = caps[dev] = mem.capped[dev]
                binding[dev] = "release staggered"
            mem.capped = held
            return caps, binding
        budget = pol.cap_target * supply
        give = pmin.copy()
        if give.sum() > budget:  # even the floors do not fit: lowest priority lose theirs first
            for p in sorted(set(prio), reverse=True):
                over = give.sum() - budget
                if over <= 0:
                    break
                idx = np.where(prio == p)[0]
                cut = min(over, float(give[idx].sum()))
                if give[idx].sum() > 0:
                    give[idx] -= cut * give[idx] / give[idx].sum()
        else:
            left = budget - give.sum()
            for p in sorted(set(prio)):  # most important first, each class up to its ceiling
                idx = np.where(prio == p)[0]
                need = np.maximum(room[idx] - pmin[idx], 0.0)
                take = min(left, float(need.sum()))
                if need.sum() > 0:
                    give[idx] += take * need / need.sum()
                left -= take
        mem.capped = {}
        for i, d in enumerate(devs):
            # held at its share while capping lasts (hysteresis); a device given all its room
            # is not capped: a hint that proves wrong must not hold its own job back
            if give[i] < room[i] - 1e-6:
                c = float(max(give[i], 0.0))
                caps[d.id] = c
                mem.capped[d.id] = c
                binding[d.id] = ("supply (priority %d)" % prio[i] if give[i] < want[i] - 1e-6
                                 else "held until demand falls (hysteresis)")
        return caps, binding

    # ---- the whole step --------------------------------------------------------------
    def allocate(self, view: RackView, pol: Policy, mem: Memory, safe: str = "") -> Allocation:
        """The next allocation; with `safe` (why), the safe allocation without optimising."""
        t0 = time.perf_counter()
        nview = {nv.id: nv for nv in view.nodes}
        avail = np.array([nview[i].available for i in self.node_ids])
        plim = np.array([self._plan_limit(nview[i], pol) if nview[i].available else 0.0
                         for i in self.node_ids])
        # 1. supply (device side)
        eta = 0.95
        # the feed's limit: its breaker, and under a site controller the budget it leases
        feed_lim = (self.rack.breaker_limit_w if view.feed_budget_w is None
                    else min(self.rack.breaker_limit_w, view.feed_budget_w))
        feed_dev = pol.feed_margin * feed_lim * eta
        if pol.ramp_w_per_s > 0 and mem.last_feed_plan_w is not None:
            feed_dev = min(feed_dev, (mem.last_feed_plan_w + pol.ramp_w_per_s * pol.period_s)
                           * eta)
        bat = view.battery
        bat_dis = (bat.p_discharge_max_w if bat and bat.soc > pol.battery_soc_min else 0.0)
        if bat is not None and view.battery_last_s is not None:
            bat_dis = min(bat_dis, battery_allowance_w(bat, pol.battery_soc_min,
                                                       max(view.battery_last_s, pol.period_s)))
        supply = min(float(plim.sum()) / (1 + pol.reserve_frac), feed_dev) + bat_dis
        # 2. caps
        caps, dev_binding = self._caps(view, pol, mem, supply)
        upper = np.array([dv.upper_w for dv in view.devices])
        mean = np.array([dv.mean_w for dv in view.devices])
        capv = np.array([dv.p_max_w if caps[dv.id] is None else caps[dv.id]
                         for dv in self.rack.devices])
        upper_c, mean_c = np.minimum(upper, capv), np.minimum(mean, capv)
        load_hi = np.zeros(self.net.nseg)
        np.add.at(load_hi, self.dev_seg, upper_c)
        load_mean = np.zeros(self.net.nseg)
        np.add.at(load_mean, self.dev_seg, mean_c)
        # 3. battery: shave the peak above the feed's limit; recharge in valleys
        battery_w = 0.0
        conv_need = float(upper_c.sum())
        conv_term = float(plim.sum()) / (1 + pol.reserve_frac)
        feed_term = pol.shave_at / pol.feed_margin * feed_dev
        conv_cap = min(conv_term, feed_term)
        if bat is not None:
            # where the feed is what binds, nothing is commanded: the unit's own loop
            # (battery_shave_above_w) meets the feed's excess as measured, within the
            # period, so the battery spends energy only on a peak that comes, never on one a
            # forecast expected and that did not come, and its energy lasts for the peaks
            # (bench/RESULTS.md: a discharge planned on the mean forecast left 10-18 % more
            # energy unmet on training-jobs). Where the converters bind, that loop (which
            # watches the feed) would not see the peak: discharge planned on the P95.
            # The shares and setpoints are still planned with the discharge the mean forecast
            # expects, so that the converters leave the battery's segment the voltage room to
            # take it (a unit never drives its bus above the band's top).
            feed_binds = feed_term <= conv_term
            need = float(mean_c.sum()) if feed_binds else conv_need
            planned = 0.0
            if need > conv_cap and bat.soc > pol.battery_soc_min:
                planned = min(need - conv_cap, bat.p_discharge_max_w)
                battery_w = 0.0 if feed_binds else planned
            elif bat.soc < pol.battery_soc_target:
                room = pol.recharge_below * feed_lim * eta - conv_need
                planned = battery_w = -min(bat.p_charge_max_w, max(room, 0.0))
            load_hi[self.bat_seg] -= planned
            load_mean[self.bat_seg] -= planned
        # supply made ready for hinted starts: what ties, shedding and the check carry
        ready = np.array([dv.ready_w for dv in view.devices])
        if ready.any():
            np.add.at(load_hi, self.dev_seg, np.maximum(np.minimum(ready, capv) - upper_c, 0.0))
        # 4. ties, 5. phase shedding, 6. shares
        closed, tie_why = self._ties(load_hi, plim, pol, view)
        reason = "optimal"
        # the largest jump one device could make now, per segment (W)
        step = np.zeros(self.net.nseg)
        headroom = np.zeros(self.net.nseg)  # W all of a segment's devices could still rise
        # W the devices kept room for a pause (a hint's, a learnt one) add when it ends: a
        # job's devices come back together, so all of them, not only the largest one
        back = np.zeros(self.net.nseg)
        if pol.step_reserve:
            rise = np.maximum(capv - mean_c, 0.0)
            paused = np.array([dv.room_w is not None for dv in view.devices])
            np.maximum.at(step, self.dev_seg, rise)
            np.add.at(headroom, self.dev_seg, rise)
            np.add.at(back, self.dev_seg, np.where(paused, rise, 0.0))
        shed: set[int] = set()
        try:
            if safe:
                raise _SafeMode(safe)
            on, node_why, shed = self._shed(closed, load_hi, step, headroom, back, plim,
                                            avail, view, pol, mem)
            lo = np.zeros(len(self.node_ids))
            for k, i in enumerate(self.node_ids):
                if on[k] and str(i) in pol.node_output_w:
                    lo[k] = min(pol.node_output_w[str(i)], plim[k])
            p_share = self._shares(closed, on, load_mean, plim, lo)
            vref, fl = self._setpoints(closed, on, p_share, load_mean, pol)
            ok, check = self._check(closed, vref, load_hi, view, pol)
            if not ok:
                reason = f"optimised allocation failed its check ({check}): safe allocation"
        except _SafeMode as e:
            ok, reason = False, f"safe mode ({e}): safe allocation"
        except (ValueError, np.linalg.LinAlgError, RuntimeError) as e:
            ok, reason = False, f"optimiser failed ({e}): safe allocation"
        late = (time.perf_counter() - t0) * 1000 > pol.optimise_deadline_ms
        if late and ok:
            ok, reason = False, "optimiser ran late: safe allocation"
        fallback = not ok
        if fallback:
            shed = set()
            on = avail.copy()
            node_why = {i: ("on (safe allocation)" if a else nview[i].why or "unavailable")
                        for i, a in zip(self.node_ids, avail, strict=True)}
            vref = np.where(on, [n.safe_vout(self.rack.bus_voltage) for n in self.rack.nodes],
                            np.nan)
            fl = flow(self.net, closed, vref, load_mean)
            ok, check = self._check(closed, vref, load_hi, view, pol)
            if not ok:
                reason += f"; the safe allocation fails its check too ({check})"
        mem.on = {i for i, o in zip(self.node_ids, on, strict=True) if o}
        conv_loss = np.where(on, self.losses(np.arange(len(on)), fl.p_conv), 0.0)
        feed_plan = float(np.sum(np.where(on, fl.p_conv, 0.0) + conv_loss))
        mem.last_feed_plan_w = max(feed_plan, view.feed_w)
        # a shed converter is held ready: it starts on its own at its safe output if the bus
        # falls under the band before this host acts (load back faster than a period, or the
        # host starved or paused), as it would run with no host at all. The wake level is
        # the band's bottom: halfway to the brownout level (0.96 p.u.) let job-start's bus
        # under 0.95 p.u. for a step before the wake came (a priority-1 brownout, measured).
        # A plan holds the highest segment at v_target_pu and a rack's distribution drops
        # are millivolts, so a shed plan does not sit at the bottom; were it to, a wake holds
        # every converter on for WAKE_HOLD_S, not a churn each period
        wake_v = round(pol.v_min_pu * self.rack.bus_voltage, 4)
        standby = {self.node_ids[k]: (self.rack.nodes[k].safe_vout(self.rack.bus_voltage), wake_v)
                   for k in sorted(shed)}
        nodes: dict[int, dict[str, Any]] = {}
        for k, i in enumerate(self.node_ids):
            share = float(fl.p_conv[k]) if on[k] else 0.0
            why = node_why.get(i, "")
            if i in standby:
                why += f"; standby: starts on its own under {wake_v:.2f} V"
            nodes[i] = {"on": bool(on[k]), "vref": None if not on[k] else round(float(vref[k]), 4),
                        "share_w": round(share, 2), "plan_limit_w": round(float(plim[k]), 1),
                        "loss_w": round(float(conv_loss[k]), 2),
                        "wake_below_v": standby[i][1] if i in standby else None,
                        "why": why,
                        "binding": ("thermal" if nview[i].temp_c > pol.thermal_soft_c else
                                    "plan limit" if on[k] and share > 0.99 * plim[k] else "none")}
        devices = {}
        for k, d in enumerate(self.dev_ids):
            devices[d] = {"measured_w": round(float(view.devices[k].measured_w), 2),
                          "forecast_w": round(float(mean[k]), 2),
                          "p95_w": round(float(upper[k]), 2),
                          "cap_w": None if (c := caps[d]) is None else round(float(c), 2),
                          "ceiling_w": round(float(pol.ceiling_w(self.rack.devices[k])), 2),
                          "ready_w": round(float(view.devices[k].ready_w), 2),
                          "room_w": (None if (r := view.devices[k].room_w) is None
                                     else round(float(r), 2)),
                          "smoothing_up_w_per_s": pol.smoothing_up_w_per_s or None,
                          "smoothing_down_w_per_s": pol.smoothing_down_w_per_s or None,
                          "binding": dev_binding[d]}
        loss_conv = float(sum(n["loss_w"] for n in nodes.values()))
        predicted = {"loss_conversion_w": round(loss_conv, 3),
                     "loss_distribution_w": round(fl.loss_dist_w, 3),
                     "feed_w": round(feed_plan, 2), "supply_w": round(supply, 2),
                     "feed_limit_w": round(feed_lim, 2),
                     "demand_p95_w": round(float(upper.sum()), 2),
                     "vmin": round(float(np.min(fl.v)), 4), "vmax": round(float(np.max(fl.v)), 4)}
        flows = [{"id": b.id, "closed": bool(closed[k]),
                  "current_a": round(float(fl.i_branch[k]), 3)}
                 for k, b in enumerate(self.rack.branches)]
        return Allocation(
            t=view.t,
            vref={i: (None if not on[k] else float(vref[k])) for k, i in enumerate(self.node_ids)},
            closed=[bool(c) for c in closed], caps=caps, battery_w=float(battery_w),
            battery_shave_above_w=(pol.shave_at * feed_lim if bat is not None
                                   and bat.soc > pol.battery_soc_min else None),
            ok=ok, fallback=fallback, reason=reason + ("; " + tie_why if tie_why else ""),
            predicted=predicted, nodes=nodes, devices=devices,
            elapsed_ms=(time.perf_counter() - t0) * 1000, flows=flows, standby=standby)

    # ---- 4. ties -------------------------------------------------------------------------
    def _deficit(self, closed: Bools, load: Floats, plim: Floats) -> float:
        isl = self.net.islands(closed)
        d = 0.0
        for lab in np.unique(isl):
            segs = isl == lab
            cap = float(plim[segs[self.net.conv_seg]].sum())
            d += max(0.0, float(load[segs].sum()) - cap)
        return d

    def _ties(self, load: Floats, plim: Floats, pol: Policy, view: RackView) -> tuple[Bools, str]:
        closed = self.normal.copy()
        free = self.switchable.copy()
        reachable = {nv.id: nv.reachable for nv in view.nodes}
        for k, b in enumerate(self.rack.branches):
            if b.id in pol.tie_override:  # the operator's word: not searched over
                closed[k] = pol.tie_override[b.id]
                free[k] = False
            if b.port is not None and not reachable.get(b.port[0], True):
                closed[k] = free[k] = False  # its node is away: open, and not ours to close
        base = self._deficit(closed, load, plim)
        if base <= 0 and pol.ties == "normal":
            return closed, ""
        best, best_d, why = closed, base, ""
        opens = [k for k in range(len(closed)) if free[k] and not closed[k]]
        for k in opens:  # close one open tie
            c = closed.copy()
            c[k] = True
            dd = self._deficit(c, load, plim)
            if dd < best_d - 1e-9:
                best, best_d = c, dd
                why = f"tie {self.rack.branches[k].id} closed to supply an island"
        if best_d > 0:  # still short: close every tie
            c = closed | free
            if self._deficit(c, load, plim) < best_d:
                best, why = c, "all ties closed to supply islands"
        if pol.ties == "optimise" and best_d <= 0:
            c = best | free  # a fully meshed rack carries current on more paths
            if self._deficit(c, load, plim) <= 0:
                best, why = c, "ties closed for lower distribution loss"
        return best, why

    # ---- 5. phase shedding ---------------------------------------------------------------
    def _shed(self, closed: Bools, load: Floats, step: Floats, headroom: Floats, back: Floats,
              plim: Floats, avail: Bools, view: RackView,
              pol: Policy, mem: Memory) -> tuple[Bools, dict[int, str], set[int]]:
        """Which converters run (per island, the number that minimises conversion loss with
        supply held above the P95); why each runs or not; and those shed at light load (the
        ones that would run were the load heavier: held ready, SPEC Standby)."""
        nview = {nv.id: nv for nv in view.nodes}
        isl = self.net.islands(closed)
        on = np.zeros(len(self.node_ids), bool)
        why: dict[int, str] = {}
        shed: set[int] = set()
        rotate = (pol.rotation_period_s > 0
                  and view.t - mem.last_rotation_t >= pol.rotation_period_s)
        for lab in np.unique(isl):
            ks = [k for k in range(len(self.node_ids))
                  if isl[self.net.conv_seg[k]] == lab and avail[k]]
            for k in range(len(self.node_ids)):
                if isl[self.net.conv_seg[k]] == lab and not avail[k]:
                    why[self.node_ids[k]] = nview[self.node_ids[k]].why or "unavailable"
            demand = float(load[isl == lab].sum())
            if not ks:
                continue
            pinned = {k: pol.node_output_w[str(self.node_ids[k])] for k in ks
                      if str(self.node_ids[k]) in pol.node_output_w}
            if pinned:  # the operator's pins hold; the others are chosen around them
                for k, w in pinned.items():
                    on[k] = w > 0
                    why[self.node_ids[k]] = (f"pinned by the operator at {w:.0f} W" if w > 0
                                             else "off: pinned by the operator")
                demand = max(0.0, demand - sum(pinned.values()))
                ks = [k for k in ks if k not in pinned]
                if not ks:
                    continue
            if view.sag:  # the bus is short of supply now: everything available runs
                for k in ks:
                    on[k] = True
                    why[self.node_ids[k]] = f"on: {view.sag}"
                continue
            if not pol.power_saving or demand <= 0:
                for k in ks:
                    on[k] = demand > 0 or not pol.power_saving
                    why[self.node_ids[k]] = "on (power saving off)" if on[k] else "off: no load"
                continue
            # preference: running ones first (no churn), then the least run, the coolest
            ks.sort(key=lambda k: (self.node_ids[k] not in mem.on,
                                   nview[self.node_ids[k]].run_s, nview[self.node_ids[k]].temp_c))
            if rotate and any(self.node_ids[k] not in mem.on for k in ks):
                running = [k for k in ks if self.node_ids[k] in mem.on]
                rested = [k for k in ks if self.node_ids[k] not in mem.on]
                if running and rested:
                    tired = max(running, key=lambda k: nview[self.node_ids[k]].run_s)
                    fresh = min(rested, key=lambda k: nview[self.node_ids[k]].run_s)
                    ks.remove(fresh)
                    ks.insert(0, fresh)
                    ks.remove(tired)
                    ks.append(tired)
                    mem.last_rotation_t = view.t
            # held above the P95: the reserve, one device's jump to its max, and (step_reserve)
            # the rack's largest recent jump as far as this island's devices can make it, or
            # the paused devices' return if larger (seen or not: a rack shed to two
            # converters in a pause, the host late, had two at their current limit when the
            # job came back and the bus fell to 9.9 V; with no controller all four run)
            jump = (max(min(view.jump_w, float(headroom[isl == lab].sum())),
                        float(back[isl == lab].sum()))
                    if pol.step_reserve else 0.0)
            need = max(demand * (1 + pol.reserve_frac),
                       demand + max(float(step[isl == lab].max()), jump))
            best_n, best_loss = len(ks), np.inf
            karr = np.array(ks, np.int64)
            cum = np.cumsum(plim[karr])
            losses: dict[int, float] = {}
            cur_n = sum(1 for k in ks if self.node_ids[k] in mem.on)
            rising = 0
            for n in range(int(np.searchsorted(cum, need)) + 1, len(ks) + 1):
                share = demand * plim[karr[:n]] / cum[n - 1]  # proportional to planned capacity
                losses[n] = float(self.losses(karr[:n], share).sum())
                if losses[n] < best_loss:
                    best_n, best_loss, rising = n, losses[n], 0
                else:
                    rising += 1
                    if rising >= 3 and n > cur_n:  # loss grows with n past its minimum
                        break
            if cur_n in losses and losses[cur_n] - best_loss < pol.min_saving_w:
                best_n = cur_n  # hysteresis: not worth a change
            for j, k in enumerate(ks):
                on[k] = j < best_n
                why[self.node_ids[k]] = (f"on: {best_n} of {len(ks)} carry {demand:.0f} W"
                                         if on[k] else "off: shed at light load")
                if not on[k]:
                    shed.add(k)
        return on, why, shed

    # ---- 6. shares -----------------------------------------------------------------------
    def _shares(self, closed: Bools, on: Bools, load: Floats, plim: Floats, lo: Floats | None = None) -> Floats:
        """Converter powers (W) minimising quadratic conversion loss + mesh loss, subject to
        linearised KCL at the nominal voltage and each converter's planned limit; a converter
        with a floor `lo` > 0 (an operator's pin) carries exactly that."""
        net = self.net
        ks = np.where(on)[0]
        n, ns = len(ks), net.nseg
        if n == 0:
            raise ValueError("no converter is on")
        v = net.v_nom
        g = sp.csr_matrix(net.conductance(closed))
        m = sp.csr_matrix((np.ones(n), (net.conv_seg[ks], np.arange(n))), shape=(ns, n))
        p_obj = sp.block_diag([sp.diags(2 * self.qc[ks]), 2 * g], format="csc")
        q = np.concatenate([self.qb[ks], np.zeros(ns)])
        isl = net.islands(closed)
        refs = []
        for lab in np.unique(isl):
            segs = np.where(isl == lab)[0]
            refs.append(int(segs[0]))
        a_eq = sp.hstack([-m, v * g])
        a_ref = sp.csr_matrix((np.ones(len(refs)), (np.arange(len(refs)), n + np.array(refs))),
                              shape=(len(refs), n + ns))
        eye = sp.hstack([sp.eye(n), sp.csr_matrix((n, ns))])
        a = sp.vstack([a_eq, a_ref, -eye, eye], format="csc")
        floor = np.zeros(n) if lo is None else lo[ks]
        ceil = np.where(floor > 0, floor, plim[ks])
        b = np.concatenate([-load, np.zeros(len(refs)), -floor, ceil])
        cones = [clarabel.ZeroConeT(ns + len(refs)), clarabel.NonnegativeConeT(2 * n)]
        st = clarabel.DefaultSettings()
        st.verbose = False
        sol = clarabel.DefaultSolver(sp.triu(p_obj, format="csc"), q, a, b, cones, st).solve()
        if str(sol.status) not in ("Solved", "AlmostSolved"):
            raise RuntimeError(f"share QP {sol.status}")
        p = np.zeros(len(on))
        p[ks] = np.maximum(np.array(sol.x[:n]), 0.0)
        return p

    def _setpoints(self, closed: Bools, on: Bools, p_share: Floats, load: Floats, pol: Policy
                   ) -> tuple[Floats, DcFlow]:
        vt = pol.v_target_pu * self.net.v_nom
        hold = vt
        for _ in range(3):  # the highest segment at the target: shift the holder's voltage
            r = realise(self.net, closed, on, p_share, load, hold)
            if r is None:
                raise RuntimeError("no setpoints realise the shares")
            vref, fl = r
            hold += vt - float(np.max(fl.v))
            if abs(vt - float(np.max(fl.v))) < 1e-4:
                break
        return vref, fl

    # ---- 7. check ------------------------------------------------------------------------
    def _check(self, closed: Bools, vref: Floats, load_hi: Floats, view: RackView, pol: Policy
               ) -> tuple[bool, str]:
        fl = flow(self.net, closed, vref, load_hi)
        if not fl.converged:
            return False, "load flow at P95 demand did not converge"
        lo, hi = pol.v_min_pu * self.net.v_nom, pol.v_max_pu * self.net.v_nom
        if float(np.min(fl.v)) < lo - 1e-6 or float(np.max(fl.v)) > hi + 1e-6:
            return False, (f"segment voltage {np.min(fl.v):.3f}..{np.max(fl.v):.3f} V outside "
                           f"{lo:.3f}..{hi:.3f} V at P95 demand")
        nview = {nv.id: nv for nv in view.nodes}
        for k, i in enumerate(self.node_ids):
            if fl.p_conv[k] > nview[i].limit_w + 1e-6:
                return False, f"node {i} over its limit ({fl.p_conv[k]:.0f} W > " \
                              f"{nview[i].limit_w:.0f} W) at P95 demand"
        return True, ""
