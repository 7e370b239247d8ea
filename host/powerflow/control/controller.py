"""The rack controller's decision step: observations -> forecasts -> allocation.

One `RackController` per rack. Each period the loop driving it (the live host, or the
scenario runner in fast mode) hands it what was observed: each node's latest telemetry
and each device's power and utilisation. It keeps the per-device online forecasters,
judges which converters are available (online, no latched fault, delivering when asked
to), accumulates running hours for rotation, and returns the allocation to dispatch.
It does no I/O, so the same code runs on real boards, on the emulated rack and in tests.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pfproto import defs as d
from powerflow.control.allocate import (Allocation, Allocator, BatteryView, DeviceView, Memory,
                                        NodeView, RackView)
from powerflow.control.policy import Policy, policy_from_config
from powerflow.forecast.batch import BatchForecaster
from powerflow.rack import Rack

HORIZONS = (1, 10, 60)  # periods
QUARANTINE_S = 300.0  # a converter that did not deliver is retried after this long


@dataclass
class NodeObs:
    """A node as the host sees it: link state and its latest telemetry (named fields)."""

    online: bool
    telemetry: dict[str, Any]
    age_s: float = 0.0  # since that telemetry arrived


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
    def __init__(self, rack: Rack, policy: Policy | None = None) -> None:
        self.rack = rack
        devs = {dv.id: (dv.p_min_w, dv.p_max_w) for dv in rack.devices}
        base, self.profiles = policy_from_config(rack.extra.get("policy", {}),
                                                 rack.extra.get("profile", {}), devs)
        self.policy = policy or base
        self.allocator = Allocator(rack)
        self.memory = Memory()
        self.forecaster = BatchForecaster(len(rack.devices), HORIZONS, n_exog=1)
        self.pmax = np.array([dv.p_max_w for dv in rack.devices])
        self.dev_index = {dv.id: k for k, dv in enumerate(rack.devices)}
        self.forecasts: dict[str, DeviceForecast] = {dv.id: DeviceForecast()
                                                     for dv in rack.devices}
        self.last_power = {dv.id: dv.p_nom_w for dv in rack.devices}
        self.run_s = {n.id: 0.0 for n in rack.nodes}
        self.suspect: dict[int, int] = {n.id: 0 for n in rack.nodes}  # periods not delivering
        self.quarantined: dict[int, float] = {}  # node -> since (s)
        self.planned_on: dict[int, int] = {n.id: 0 for n in rack.nodes}  # periods in a row
        self.last: Allocation | None = None
        self.cycle_ms: list[float] = []

    # ---- policy ------------------------------------------------------------------------
    def set_policy(self, changes: dict[str, Any]) -> Policy:
        """Apply policy changes (or `{"profile": NAME}`); PolicyError leaves the policy as it was."""
        devs = {dv.id: (dv.p_min_w, dv.p_max_w) for dv in self.rack.devices}
        if set(changes) == {"profile"}:
            name = changes["profile"]
            if name not in self.profiles:
                from powerflow.control.policy import PolicyError
                raise PolicyError(f"policy: no profile '{name}'; profiles: "
                                  f"{', '.join(sorted(self.profiles))}")
            self.policy = self.profiles[name]
        else:
            ties = {b.id for b in self.rack.branches if b.switch == "tie"}
            nodes = {str(n.id): n.rating_w for n in self.rack.nodes}
            self.policy = self.policy.changed(changes, devs, ties, nodes)
        return self.policy

    def release_quarantine(self, node_id: int) -> None:
        """The operator cleared the node's faults: it may be used again."""
        self.quarantined.pop(node_id, None)
        self.suspect[node_id] = 0

    # ---- one period --------------------------------------------------------------------
    def _forecast(self, devices: dict[str, DeviceObs]) -> list[DeviceView]:
        n = len(self.rack.devices)
        y, u, stale = np.zeros(n), np.zeros((n, 1)), np.zeros(n, bool)
        for k, dv in enumerate(self.rack.devices):
            ob = devices.get(dv.id, DeviceObs(None))
            stale[k] = ob.power_w is None
            y[k] = self.last_power[dv.id] if stale[k] else float(ob.power_w)  # type: ignore
            self.last_power[dv.id] = float(y[k])
            u[k, 0] = 0.0 if ob.utilisation is None else float(ob.utilisation)
        means, uppers, models = self.forecaster.step(y, u, stale)
        pmax = self.pmax.copy()
        for dev, cap in self.policy.p_max_w.items():
            pmax[self.dev_index[dev]] = cap
        mean1 = np.clip(means[1], 0.0, pmax)
        upper1 = np.clip(np.maximum(uppers[1], means[1]), 0.0, pmax)
        names = ("persistence", "ridge", "mean")
        views = []
        for k, dv in enumerate(self.rack.devices):
            self.forecasts[dv.id] = DeviceForecast(
                {h: float(means[h][k]) for h in HORIZONS}, {h: float(uppers[h][k]) for h in HORIZONS},
                {h: names[int(models[h][k])] for h in HORIZONS}, bool(stale[k]))
            views.append(DeviceView(dv.id, float(mean1[k]), float(upper1[k]), float(y[k])))
        return views

    def _nodes(self, t: float, nodes: dict[int, NodeObs]) -> list[NodeView]:
        views = []
        prev = self.last
        pol = self.policy
        for n in self.rack.nodes:
            ob = nodes.get(n.id, NodeObs(False, {}))
            tel = ob.telemetry
            mode = tel.get("MODE", d.MODE_OFF)
            on = mode in (d.MODE_SOFTSTART, d.MODE_CV, d.MODE_CC)
            if on:
                self.run_s[n.id] += pol.period_s
            faults = int(tel.get("FAULTS") or 0) & ~d.FAULT_FAILSAFE & ~d.FAULT_WATCHDOG
            limit = float(tel.get("IOUT_LIMIT", n.iout_max)) * self.rack.bus_voltage
            limit = min(limit, n.rating_w)
            why = ""
            # a converter asked to carry a real share that sources nothing has a dead stage
            # (judged on telemetry sampled after that plan went out)
            plan = prev.nodes.get(n.id, {}) if prev else {}
            planned = plan.get("share_w", 0.0)
            cmd = tel.get("VOUT_COMMAND")
            settled = (self.planned_on.get(n.id, 0) >= 1 and ob.age_s < pol.period_s
                       and plan.get("vref") is not None and cmd is not None
                       and abs(float(cmd) - plan["vref"]) < 0.01)  # it runs our setpoint
            iout = float(tel.get("READ_IOUT") or 0.0)
            if (settled and mode == d.MODE_CV and planned > 0.1 * n.rating_w
                    and iout < 0.02 * n.iout_max):
                self.suspect[n.id] += 1
            else:
                self.suspect[n.id] = 0
            if self.suspect[n.id] >= 1 and n.id not in self.quarantined:
                self.quarantined[n.id] = t
            if n.id in self.quarantined and t - self.quarantined[n.id] > QUARANTINE_S:
                del self.quarantined[n.id]
            if not ob.online:
                why = "unavailable: link lost"
            elif faults:
                why = f"unavailable: latched fault {faults:#x}"
            elif n.id in self.quarantined:
                why = "unavailable: not delivering current when asked to"
            elif ob.age_s > 3 * max(pol.period_s, 1.0):
                why = "unavailable: telemetry stale"
            views.append(NodeView(n.id, not why, on, limit,
                                  float(tel.get("READ_TEMPERATURE_1") or 25.0), self.run_s[n.id],
                                  why))
        return views

    def _sag(self, nodes: dict[int, NodeObs]) -> str:
        """Why the bus is short of supply now ('' if it is not): a converter current-limited,
        or a bus voltage under the band (loads then draw less than they want, so their
        measured power understates demand)."""
        low = self.policy.v_min_pu * self.rack.bus_voltage
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

    def step(self, t: float, nodes: dict[int, NodeObs], devices: dict[str, DeviceObs],
             battery: BatteryView | None = None, feed_w: float = 0.0) -> Allocation:
        """Learn from this period's observations and decide the next period's allocation."""
        t0 = time.perf_counter()
        view = RackView(t, self._nodes(t, nodes), self._forecast(devices), battery, feed_w,
                        self._sag(nodes))
        alloc = self.allocator.allocate(view, self.policy, self.memory)
        for i, v in alloc.vref.items():
            self.planned_on[i] = self.planned_on[i] + 1 if v is not None else 0
        self.last = alloc
        alloc.elapsed_ms = (time.perf_counter() - t0) * 1000.0
        self.cycle_ms.append(alloc.elapsed_ms)
        del self.cycle_ms[:-100000]
        return alloc

    def preview(self, t: float, nodes: dict[int, NodeObs], battery: BatteryView | None = None,
                feed_w: float = 0.0) -> Allocation:
        """The allocation the next period would make from the present forecasts, changing
        nothing (`powerflow plan`)."""
        saved = (copy.deepcopy(self.run_s), copy.deepcopy(self.suspect),
                 copy.deepcopy(self.quarantined))
        devs = []
        for dv in self.rack.devices:
            f = self.forecasts[dv.id]
            pmax = self.policy.p_max_w.get(dv.id, dv.p_max_w)
            mean = min(max(f.mean_w.get(1, self.last_power[dv.id]), 0.0), pmax)
            upper = min(max(f.upper_w.get(1, mean), mean), pmax)
            devs.append(DeviceView(dv.id, mean, upper, self.last_power[dv.id]))
        view = RackView(t, self._nodes(t, nodes), devs, battery, feed_w)
        self.run_s, self.suspect, self.quarantined = saved
        return self.allocator.allocate(view, self.policy, copy.deepcopy(self.memory))
