"""The rack controller's decision step: observations -> forecasts -> allocation.

One `RackController` per rack. Each period the loop driving it (the live host, or the
scenario runner in fast mode) hands it what was observed: each node's latest telemetry
and each device's power and utilisation. It keeps the per-device online forecasters,
has the health judge decide which converters are available (`control.health`: verdicts
on evidence, probes, quarantine with backoff), has the supervisor compare what is
measured with what was planned (`control.supervisor`: safe mode), keeps the alarms,
accumulates running hours for rotation, and returns the allocation to dispatch, with the
measured bus beside the predicted one and a state (optimal / degraded / safe).
It does no I/O, so the same code runs on real boards, on the emulated rack and in tests.
"""

from __future__ import annotations

import copy
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pfproto import defs as d
from powerflow.control.alarms import AlarmBook
from powerflow.control.allocate import (Allocation, Allocator, BatteryView, DeviceView, Memory,
                                        NodeView, RackView)
from powerflow.control.budget import SiteBudget
from powerflow.control.health import HealthJudge
from powerflow.control.readings import Reading, StartUp, reading
from powerflow.control.supervisor import Measured, Supervisor, measure
from powerflow.control.policy import Policy, PolicyError, rack_policy
from powerflow.control.hints import HintBook
from powerflow.forecast.batch import MODELS, BatchForecaster
from powerflow.forecast.returns import ReturnMemory
from powerflow.model.rack import Rack

HORIZONS = (1, 10, 60)  # periods
LATE_FRAC = 0.25  # a period that starts later than this fraction of itself judges nothing
# s after a shed converter started on its own (standby wake) that every converter runs: the
# load came back faster than the host acted, and shedding it again would meet the next sag
WAKE_HOLD_S = 30.0


@dataclass
class NodeObs:
    """A node as the host sees it: link state and its latest telemetry (named fields)."""

    online: bool
    telemetry: dict[str, Any]
    age_s: float = 0.0  # since that telemetry arrived
    lost_count: int = 0  # times the host declared the link lost
    vout_low: float | None = None  # V: lowest READ_VOUT among samples since the last look
    # s since it last started on its own (standby: the bus fell under its wake level);
    # None: not since this host took it over
    woke_age_s: float | None = None


@dataclass
class DeviceObs:
    power_w: float | None  # None: no fresh sample
    utilisation: float | None = None  # 0..1


@dataclass
class DeviceForecast:
    mean_w: dict[int, float] = field(default_factory=dict)
    upper_w: dict[int, float] = field(default_factory=dict)
    model: dict[int, str] = field(default_factory=dict)
    stale: bool = False


class RackController:
    def __init__(self, rack: Rack, policy: Policy | None = None,
                 forecaster: Any = None) -> None:
        """`forecaster`: what predicts the devices (default the online forecaster; the
        scenario runner's arms give persistence or perfect foresight instead), an object
        with `step(y, u, stale) -> (means, uppers, models)` per horizon."""
        self.rack = rack
        base, self.profiles = rack_policy(rack)
        self.policy = policy or base
        self.allocator = Allocator(rack)
        self.memory = Memory()
        self.forecaster = forecaster or BatchForecaster(len(rack.devices), HORIZONS, n_exog=1)
        # the forecaster's own: pauses of a periodic device repeat their lengths (not for the
        # arms' persistence or foresight, which stand for something else)
        self.returns = (ReturnMemory(len(rack.devices), self.forecaster.runs)
                        if forecaster is None else None)
        self.pmax = np.array([dv.p_max_w for dv in rack.devices])
        self.dev_index = {dv.id: k for k, dv in enumerate(rack.devices)}
        # what schedulers announced (POST /hints): folded into the forecasts each period
        self.hints = HintBook({dv.id: (dv.p_min_w, dv.p_max_w) for dv in rack.devices})
        # one-period rises of the devices' total (t, W), decreasing: a monotonic queue, so
        # the largest within jump_memory_s is at its head whatever the period
        self._jumps: deque[tuple[float, float]] = deque()
        self._last_total: float | None = None
        # W of room hints let the caps keep for a device this period (HintBook.room)
        self.room: dict[str, float] = {}
        self.forecasts: dict[str, DeviceForecast] = {dv.id: DeviceForecast()
                                                     for dv in rack.devices}
        self.last_power = {dv.id: dv.p_nom_w for dv in rack.devices}
        self.run_s = {n.id: 0.0 for n in rack.nodes}
        self.alarms = AlarmBook()
        self.health = HealthJudge(rack, self.alarms)
        self.supervisor = Supervisor(rack, self.alarms)
        self.startup = StartUp(rack)
        self.measured: Measured | None = None
        self.late_periods = 0  # periods that started late (no verdicts in them)
        self.planned_on: dict[int, int] = {n.id: 0 for n in rack.nodes}  # periods in a row
        self.last: Allocation | None = None
        self.cycle_ms: list[float] = []
        self.site: SiteBudget | None = None  # the site's budget lease (join_site)

    def join_site(self) -> SiteBudget:
        """Put the rack under a site controller: from now its feed obeys a budget lease,
        the safe budget of its rack file until the first lease arrives."""
        if self.site is None:
            self.site = SiteBudget(self.rack.floor_w, self.rack.safe_budget_w,
                                   self.rack.breaker_limit_w, self.alarms)
        return self.site

    # ---- policy ------------------------------------------------------------------------
    def candidate_policy(self, changes: dict[str, Any]) -> Policy:
        """The policy `changes` (or `{"profile": NAME}`) would make, checked against the rack;
        PolicyError says what is wrong. The policy in force is not touched."""
        if set(changes) == {"profile"}:
            name = changes["profile"]
            if name not in self.profiles:
                raise PolicyError(f"policy: no profile '{name}'; profiles: "
                                  f"{', '.join(sorted(self.profiles))}")
            return self.profiles[name]
        devs = {dv.id: (dv.p_min_w, dv.p_max_w) for dv in self.rack.devices}
        ties = {b.id for b in self.rack.branches if b.switch == "tie"}
        nodes = {str(n.id): n.rating_w for n in self.rack.nodes}
        return self.policy.changed(changes, devs, ties, nodes)

    def adopt_policy(self, policy: Policy) -> None:
        """Put a policy made by `candidate_policy` in force from the next period."""
        self.policy = policy

    def set_policy(self, changes: dict[str, Any]) -> Policy:
        """Apply policy changes (or `{"profile": NAME}`); PolicyError leaves the policy as it was."""
        self.adopt_policy(self.candidate_policy(changes))
        return self.policy

    def release_quarantine(self, node_id: int) -> None:
        """The operator cleared the node's faults: it is re-admitted, one node a period."""
        self.health.operator_release(node_id)

    # ---- one period --------------------------------------------------------------------
    def _forecast(self, t: float, devices: dict[str, DeviceObs]) -> list[DeviceView]:
        n = len(self.rack.devices)
        y, u, stale = np.zeros(n), np.zeros((n, 1)), np.zeros(n, bool)
        for k, dv in enumerate(self.rack.devices):
            ob = devices.get(dv.id, DeviceObs(None))
            stale[k] = ob.power_w is None
            y[k] = self.last_power[dv.id] if stale[k] else float(ob.power_w)  # type: ignore
            self.last_power[dv.id] = float(y[k])
            u[k, 0] = 0.0 if ob.utilisation is None else float(ob.utilisation)
        means, uppers, models = self.forecaster.step(y, u, stale)
        # the caps in force while the devices were measured: a device held at its cap shows
        # its cap, not whether a pause (hinted or learnt) holds
        caps = self.last.caps if self.last is not None else {}
        if self.returns is not None:
            free = np.array([self.hints.free(dv.id, float(y[k]), caps)
                             for k, dv in enumerate(self.rack.devices)])
            means, uppers = self.returns.step(y, self.forecaster.lags, means, uppers, free)
        self._record_jump(t, float(y.sum()))
        if self.hints.active:
            means, uppers = self.hints.fold(t, self.policy.period_s, self.dev_index, means,
                                            uppers, y, caps)
        self.room = (self.hints.room(t, self.policy.period_s, self.dev_index, y, caps)
                     if self.hints.active else {})
        if self.returns is not None:  # a learnt pause gives room as a pause hint does
            for i in np.flatnonzero(np.isfinite(self.returns.room)):
                self.room.setdefault(self.rack.devices[i].id, float(self.returns.room[i]))
        pmax = self.pmax.copy()
        for dev, cap in self.policy.p_max_w.items():
            pmax[self.dev_index[dev]] = cap
        mean1 = np.clip(means[1], 0.0, pmax)
        upper1 = np.clip(np.maximum(uppers[1], means[1]), 0.0, pmax)
        names = MODELS
        ready = self._ready(t)
        views = []
        for k, dv in enumerate(self.rack.devices):
            self.forecasts[dv.id] = DeviceForecast(
                {h: float(means[h][k]) for h in HORIZONS}, {h: float(uppers[h][k]) for h in HORIZONS},
                {h: names[int(models[h][k])] for h in HORIZONS}, bool(stale[k]))
            views.append(DeviceView(dv.id, float(mean1[k]), float(upper1[k]), float(y[k]),
                                    ready_w=min(ready.get(dv.id, 0.0), float(pmax[k])),
                                    room_w=self.room.get(dv.id)))
        return views

    def _ready(self, t: float) -> dict[str, float]:
        """W of supply to hold ready per device now (hinted starts; {} without any)."""
        return self.hints.prepare(t) if self.hints.hints else {}

    def _record_jump(self, t: float, total_w: float) -> None:
        """Keep the rises of the devices' total power from one period to the next (W) for the
        policy's jump_memory_s: the largest is what devices moving together can do at once."""
        if self._last_total is not None and total_w > self._last_total:
            rise = total_w - self._last_total
            while self._jumps and self._jumps[-1][1] <= rise:
                self._jumps.pop()  # a smaller, older rise can never again be the largest
            self._jumps.append((t, rise))
        self._last_total = total_w
        while self._jumps and self._jumps[0][0] < t - self.policy.jump_memory_s:
            self._jumps.popleft()

    def jump_w(self) -> float:
        """The largest one-period rise of the devices' total seen within jump_memory_s (W)."""
        return self._jumps[0][1] if self._jumps and self.policy.jump_memory_s > 0 else 0.0

    def readings(self, t: float, nodes: dict[int, NodeObs]) -> dict[int, Reading]:
        """Each node's reading, flagged where it is still starting (not judged yet)."""
        return self.startup.mark(t, {
            n.id: reading(nodes.get(n.id, NodeObs(False, {}, float("inf"))), t,
                          self.policy.period_s) for n in self.rack.nodes})

    def _views(self, rd: dict[int, Reading], nodes: dict[int, NodeObs]) -> list[NodeView]:
        """What the allocator may use: the judge's verdicts; in safe mode every converter
        not proven failed (a suspect included)."""
        views = []
        safe = self.supervisor.safe
        for n in self.rack.nodes:
            tel = nodes.get(n.id, NodeObs(False, {})).telemetry
            r = rd[n.id]
            on = r.mode in (d.MODE_SOFTSTART, d.MODE_CV, d.MODE_CC)
            limit = float(tel.get("IOUT_LIMIT", n.iout_max)) * self.rack.bus_voltage
            limit = min(limit, n.rating_w)
            why = self.health.nodes[n.id].why
            if safe and (why.startswith("suspect") or why == "unavailable: telemetry stale"):
                why = ""
            if self.policy.node_output_w.get(str(n.id)) == 0.0:
                why = "unavailable: pinned out by the operator (policy node_output_w = 0)"
            views.append(NodeView(n.id, not why, on, limit,
                                  float(tel.get("READ_TEMPERATURE_1") or 25.0), self.run_s[n.id],
                                  why, reachable=r.online))
        return views

    def _sag(self, nodes: dict[int, NodeObs]) -> str:
        """Why the bus is short of supply now ('' if it is not): a converter current-limited,
        or a bus voltage under the band (loads then draw less than they want, so their
        measured power understates demand), or a shed converter that started on its own
        within WAKE_HOLD_S (the load came back faster than this host acted: everything runs
        a while rather than shedding it again into the next sag)."""
        low = self.policy.v_min_pu * self.rack.bus_voltage
        for i, ob in nodes.items():
            if ob.online and ob.woke_age_s is not None and ob.woke_age_s < WAKE_HOLD_S:
                return f"node {i} started on its own {ob.woke_age_s:.0f} s ago (standby)"
        for i, ob in nodes.items():
            tel = ob.telemetry
            if not ob.online or not tel:
                continue
            if tel.get("MODE") == d.MODE_CC:
                return f"node {i} current-limited"
            v = tel.get("READ_VOUT")
            if tel.get("MODE") == d.MODE_CV and v is not None and v < low:
                return f"bus at node {i} under {low:.2f} V"
        return ""

    def _budget(self, t: float) -> float | None:
        """W the site leases the feed now (None: the rack is under no site controller)."""
        return None if self.site is None else self.site.limit_w(t)

    def supervise(self, t: float, nodes: dict[int, NodeObs]) -> bool:
        """A tick of the supervisor (several a period); True when safe mode starts now."""
        self.measured = measure(self.readings(t, nodes))
        return self.supervisor.tick(t, self.measured)

    def step(self, t: float, nodes: dict[int, NodeObs], devices: dict[str, DeviceObs],
             battery: BatteryView | None = None, feed_w: float = 0.0,
             late_s: float = 0.0) -> Allocation:
        """Learn from this period's observations and decide the next period's allocation.
        `late_s`: how late the loop started this period (s); a late period judges nothing."""
        t0 = time.perf_counter()
        pol = self.policy
        late = late_s > LATE_FRAC * pol.period_s
        if late:
            self.late_periods += 1
            self.alarms.set(t, "late_cycle", "warning",
                            f"the control period started {late_s:.2f} s late: no verdicts")
        else:
            self.alarms.clear(t, "late_cycle", "on time")
        rd = self.readings(t, nodes)
        m = measure(rd)
        self.measured = m
        self.supervisor.tick(t, m)
        self.supervisor.period(t, m, pol.v_min_pu, pol.v_max_pu)
        self.health.judge(t, rd, late, self.supervisor.safe, pol.period_s)
        for n in self.rack.nodes:
            if rd[n.id].mode in (d.MODE_SOFTSTART, d.MODE_CV, d.MODE_CC):
                self.run_s[n.id] += pol.period_s
        view = RackView(t, self._views(rd, nodes), self._forecast(t, devices), battery, feed_w,
                        self._sag(nodes), self._budget(t), jump_w=self.jump_w(),
                        battery_last_s=self.hints.next_end(t))
        alloc = self.allocator.allocate(view, pol, self.memory, safe=self._safe_reason())
        self._probes(alloc)
        self._report(alloc, m)
        for i, v in alloc.vref.items():
            self.planned_on[i] = self.planned_on[i] + 1 if v is not None else 0
        self.last = alloc
        alloc.elapsed_ms = (time.perf_counter() - t0) * 1000.0
        self.cycle_ms.append(alloc.elapsed_ms)
        del self.cycle_ms[:-100000]
        return alloc

    def safe_now(self, t: float, nodes: dict[int, NodeObs], battery: BatteryView | None = None,
                 feed_w: float = 0.0) -> Allocation:
        """The safe allocation at once (the supervisor tripped between periods)."""
        alloc = self._plan(t, nodes, battery, feed_w, copy.deepcopy(self.memory))
        self.last = alloc
        return alloc

    def _safe_reason(self) -> str:
        return self.supervisor.why if self.supervisor.safe else ""

    def _probes(self, alloc: Allocation) -> None:
        """Probed converters run at their probe reference (out of the shares)."""
        for i, h in self.health.nodes.items():
            if h.probing and h.probe_vref is not None:
                alloc.vref[i] = h.probe_vref
                alloc.standby.pop(i, None)
                alloc.nodes[i].update(on=True, vref=h.probe_vref, share_w=0.0, wake_below_v=None,
                                      why=f"probe: reference {h.probe_vref:.3f} V, a step above "
                                          "its bus; a healthy converter sources current there")

    def _report(self, alloc: Allocation, m: Measured) -> None:
        """The measured bus beside the predicted one, and the state that follows from both."""
        pol, nom = self.policy, self.rack.bus_voltage
        alloc.measured = m.as_dict()
        disagree = (m.readings == 0 or m.current_limited != [] or m.failsafe != []
                    or m.vmin is None
                    or m.vmax is None or m.vmin < pol.v_min_pu * nom - 0.01
                    or m.vmax > pol.v_max_pu * nom + 0.01)
        if self.supervisor.safe:
            alloc.state = "safe"
        elif (alloc.fallback or disagree or any(h.why for h in self.health.nodes.values())
              or any(a.severity in ("critical", "major") for a in self.alarms.active.values())):
            alloc.state = "degraded"
        else:
            alloc.state = "optimal"
        alloc.alarms = len(self.alarms.active)

    def _plan(self, t: float, nodes: dict[int, NodeObs], battery: BatteryView | None,
              feed_w: float, memory: Memory) -> Allocation:
        """An allocation from the present forecasts and verdicts, judging and learning nothing."""
        devs = []
        ready = self._ready(t)
        for dv in self.rack.devices:
            f = self.forecasts[dv.id]
            pmax = self.policy.ceiling_w(dv)
            mean = min(max(f.mean_w.get(1, self.last_power[dv.id]), 0.0), pmax)
            upper = min(max(f.upper_w.get(1, mean), mean), pmax)
            devs.append(DeviceView(dv.id, mean, upper, self.last_power[dv.id],
                                   ready_w=min(ready.get(dv.id, 0.0), pmax),
                                   room_w=self.room.get(dv.id)))
        rd = self.readings(t, nodes)
        view = RackView(t, self._views(rd, nodes), devs, battery, feed_w, self._sag(nodes),
                        self._budget(t), jump_w=self.jump_w(),
                        battery_last_s=self.hints.next_end(t))
        alloc = self.allocator.allocate(view, self.policy, memory, safe=self._safe_reason())
        self._probes(alloc)
        self._report(alloc, measure(rd))
        return alloc

    def preview(self, t: float, nodes: dict[int, NodeObs], battery: BatteryView | None = None,
                feed_w: float = 0.0, policy: Policy | None = None) -> Allocation:
        """The allocation the next period would make from the present forecasts (under
        `policy` if given, else the one in force), changing nothing (`powerflow plan`)."""
        kept = self.policy
        self.policy = policy or kept  # synchronous: no period can see the candidate
        try:
            return self._plan(t, nodes, battery, feed_w, copy.deepcopy(self.memory))
        finally:
            self.policy = kept

    def exclusion(self, node_id: int) -> dict[str, Any]:
        """For the API: is the node out of the plan, why, since when (Unix time)."""
        out, why, since = self.health.excluded(node_id)
        return {"excluded": out, "excluded_why": why or None, "excluded_since": since}
