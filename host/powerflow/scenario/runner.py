"""Run a scenario on the emulated rack in fast mode and measure what happened.

Each scenario runs three times on the same rack, seed and events:

- `controlled`: the host's control loop (forecast -> allocate -> dispatch) every period;
- `even`: every converter on, setpoints chosen each period so all share equally;
- `droop`: every converter on at the bus voltage, sharing by droop, no host decisions.

The node firmware runs in-process on a virtual clock (`FastRack`), so a run takes a
fraction of its rack time; a scenario's runs (and the arms of `run_arms`) go at once, each
in a process of its own (`scenario.pool`). Outcomes come from the rack physics, not from the
host's view:
feed-limit violations (periods whose mean feed draw exceeded the breaker limit),
priority-1 brownouts (periods in which a priority-1 device got less than it demanded, by a
cap or by a sagging bus), re-share time after each converter or link failure, over-
temperature trips, standby wakes (converters the host had shed that started on their own
when the bus sagged: load came back before the host acted), and the energy lost in
conversion and distribution.
"""

from __future__ import annotations

import dataclasses
import math
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pfproto import defs as d
from powerflow.adapters.fast import FastRackIO
from powerflow.control.allocate import Allocation
from powerflow.control.controller import DeviceObs, RackController
from powerflow.control.dcnet import DcNetwork, realise
from powerflow.control.dispatch import Dispatcher
from powerflow.emulator.fast import FastRack
from powerflow.emulator.faults import apply_fault
from powerflow.emulator.workloads import JobPlan
from powerflow.model.rack import BROWNOUT_V_PU
from powerflow.nodeconfig import HEARTBEAT_TIMEOUT_MS, LEASE_MS, session_config
from powerflow.scenario.pool import RunSpec, run_all
from powerflow.scenario.spec import Event, Scenario

STEP_MS = 10  # the firmware's control period and the physics' step in fast mode
RAMP_WINDOW_S = 0.1  # the feed's ramp rate is measured between means over this long (s)


@dataclass
class Meter:
    """Accumulates measurements over physics steps and periods."""

    loss_wh: float = 0.0
    feed_wh: float = 0.0
    period_feed_j: float = 0.0
    period_s: float = 0.0
    served_j: np.ndarray = field(default_factory=lambda: np.zeros(0))
    demand_j: np.ndarray = field(default_factory=lambda: np.zeros(0))  # this period, J
    short_p1: bool = False  # a priority-1 device got less than it demanded this period
    feed_violations: int = 0
    p1_brownouts: int = 0
    periods: int = 0
    ot_trips: int = 0
    wakes: int = 0  # converters in standby that started on their own (EVENT WAKE)
    feed_peak_w: float = 0.0
    capped_j: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per device, J unmet
    battery_j: float = 0.0  # energy in and out of the battery, J
    # the feed's ramp rate: its mean over each RAMP_WINDOW_S, and the change between
    # consecutive windows (W/s)
    ramp_acc_j: float = 0.0
    ramp_acc_s: float = 0.0
    ramp_prev_w: float | None = None
    ramps: array = field(default_factory=lambda: array("d"))  # W/s, 8 bytes each
    # power smoothing's cost: work held back by a ramp-up limit, energy burnt by a ramp-down
    # limit (J), against what the devices would have drawn unlimited
    smoothing_held_j: float = 0.0
    smoothing_burnt_j: float = 0.0


# per period of a run: scalars (`t_s` at the period's end, s; `bus_vmin_v`/`bus_vmax_v`, the
# lowest and highest segment at its end, V; `feed_w` and `loss_w`, means over it, W;
# `converters_on`, and `nodeN.on` per converter) and per device (`demand_w`, `served_w` means, W; `cap_w`, `forecast_w`,
# `p95_w` from the controller, None in the baselines or when uncapped)
Series = dict[str, list[Any]]
Progress = Callable[[str, int, int], None]  # (run, periods done, periods in all)


@dataclass
class RunResult:
    mode: str
    meter: Meter
    series: Series = field(default_factory=dict)
    cycle_ms: list[float] = field(default_factory=list)
    reshare_periods: list[int] = field(default_factory=list)
    fallbacks: int = 0  # the optimiser's safe allocations (failed, late or unchecked)
    safe_mode_periods: int = 0  # periods the supervisor held the rack in safe mode


class ScenarioRun:
    def __init__(self, sc: Scenario, mode: str = "controlled", arm: str = "predictive") -> None:
        """`mode`: controlled, even or droop; `arm` (controlled only): what feeds the
        allocator, predictive (the forecaster), reactive or oracle (see `scenario.arms`)."""
        self.sc = sc
        self.mode = mode
        self.observe_demand = False
        rack = sc.rack
        self.fr = FastRack(rack, sc.seed, control_period_ms=STEP_MS)
        ph = self.fr.physics
        ph.load_scale, ph.trace_speed, ph.ambient_c = sc.load_scale, sc.trace_speed, sc.ambient_c
        ph.follow(JobPlan(sc.jobs, sc.seed, sc.trace_speed))
        for c in ph.conv.values():
            c.temp_c = sc.ambient_c
        self.ctrl = None
        self._hints: list[Any] = []  # the hinted arm's, by the time they are sent
        if mode == "controlled":
            from powerflow.control.controller import HORIZONS
            from powerflow.scenario.arms import ARMS, Oracle, Reactive, scenario_hints

            if arm not in ARMS:
                raise ValueError(f"unknown arm {arm!r} ({', '.join(ARMS)})")
            fc = (None if arm in ("predictive", "hinted") else Reactive(len(rack.devices), HORIZONS)
                  if arm == "reactive" else Oracle(ph, HORIZONS, sc.period_s, sc.events))
            # the rack's clock here is virtual and waits for the controller: a step late in
            # wall time is late on no clock the rack runs on, and the live host's deadline
            # would only make the run's outcome depend on how busy this machine is (link-loss
            # took one safe allocation run beside the other tests on two cores, none alone).
            # The step's time is still measured (cycle_ms); lateness is the chaos tests' to
            # judge, on the live host. So no deadline here
            pol = dataclasses.replace(sc.policy, optimise_deadline_ms=math.inf)
            self.ctrl = RackController(rack, pol, forecaster=fc)
            self._hints = scenario_hints(sc) if arm == "hinted" else []
        self.net = DcNetwork.of(rack)
        self.meter = Meter(served_j=np.zeros(len(rack.devices)),
                           demand_j=np.zeros(len(rack.devices)),
                           capped_j=np.zeros(len(rack.devices)))
        self.p1 = np.array([dv.priority == 1 for dv in rack.devices])
        self.p_max = np.array([dv.p_max_w for dv in rack.devices])
        self.failed_at: dict[int, int] = {}  # node -> period of its failure
        self.device_ids = [dv.id for dv in rack.devices]
        self.reshare: list[int] = []
        # leases as the live host's, stretched for periods over 1 s
        self.io = FastRackIO(self.fr, int(LEASE_MS * max(sc.period_s, 1.0)), self._period_obs)
        self.dispatcher = Dispatcher(rack)
        self.result = RunResult(mode, self.meter)
        self.series: Series = {k: [] for k in ("t_s", "bus_vmin_v", "bus_vmax_v", "feed_w",
                                               "loss_w", "converters_on")}
        for n in rack.nodes:
            self.series[f"node{n.id}.on"] = []  # 1: enabled and its power stage alive
        for dv in rack.devices:
            for k in ("demand_w", "served_w", "cap_w", "forecast_w", "p95_w"):
                self.series[f"{dv.id}.{k}"] = []
        self._acc = np.zeros(2 * len(rack.devices) + 2)  # demand, served (J), feed, loss (J)
        self._acc_s = 0.0
        self._events = list(sc.events)  # still to come

    # ---- the host's side ----------------------------------------------------------------
    def start(self) -> None:
        fr, rack = self.fr, self.sc.rack
        fr.open_sessions()
        for n in rack.nodes:
            # two readings a period, so one is always sampled after the last setpoint settled
            fr.command(n.id, d.MSG_CONFIG, session_config(n, rack.bus_voltage,
                                                          int(self.sc.period_s * 500),
                                                          HEARTBEAT_TIMEOUT_MS))
            self.io.set_output(n.id, rack.bus_voltage)
        for b in rack.branches:
            if b.port is not None:
                self.io.set_port(b.port[0], b.port[1], b.closed)
        fr.run(1.0)  # soft-start and settle before the first period
        self._n_events = len(fr.events)  # the node events counted from the first period on

    def _dispatch(self, a: Allocation) -> None:
        """The one dispatcher's commands, carried out by the fast rack's RackIO."""
        assert self.ctrl is not None
        self.io.apply_now(self.dispatcher.commands(a, self.io.commanded()))
        for nid, c in self.io.commanded().items():
            if c.online:
                self.ctrl.health.dispatched_vref(nid, c.vout, a.t)

    def _even(self) -> None:
        """Baseline: all converters on, each carrying an equal share of the measured load."""
        ph = self.fr.physics
        load = np.zeros(self.net.nseg)
        np.add.at(load, ph.dev_seg, ph.served)
        on = np.array([not self.fr.physics.conv[n.id].failed and n.id not in self.fr.cut
                       for n in self.sc.rack.nodes])
        closed = ph.branch_closed()
        share = np.where(on, load.sum() / max(on.sum(), 1), 0.0)
        r = realise(self.net, closed, on, share, load, self.sc.rack.bus_voltage)
        for k, n in enumerate(self.sc.rack.nodes):
            vref = None if r is None or np.isnan(r[0][k]) else float(r[0][k])
            self.io.set_output(n.id, vref if vref is not None else self.sc.rack.bus_voltage)

    # ---- measurement ----------------------------------------------------------------------
    def _on_step(self, dt: float) -> None:
        ph, m = self.fr.physics, self.meter
        loss = ph.loss_w()
        m.loss_wh += (loss["conversion"] + loss["distribution"]) * dt / 3600.0
        feed = ph.feed_power_w()
        m.feed_wh += feed * dt / 3600.0
        m.ramp_acc_j += feed * dt
        m.ramp_acc_s += dt
        if m.ramp_acc_s >= RAMP_WINDOW_S - 1e-9:
            w = m.ramp_acc_j / m.ramp_acc_s
            if m.ramp_prev_w is not None:
                m.ramps.append(abs(w - m.ramp_prev_w) / m.ramp_acc_s)
            m.ramp_prev_w, m.ramp_acc_j, m.ramp_acc_s = w, 0.0, 0.0
        m.period_feed_j += feed * dt
        m.period_s += dt
        m.served_j += ph.served * dt
        m.demand_j += np.minimum(ph.dev_p, self.p_max) * dt
        lag = np.minimum(ph.dev_free, self.p_max) - np.minimum(ph.dev_p, self.p_max)
        m.smoothing_held_j += float(np.maximum(lag, 0.0).sum()) * dt
        m.smoothing_burnt_j += float(np.maximum(-lag, 0.0).sum()) * dt
        demand = np.minimum(ph.dev_p, self.p_max)
        m.capped_j += np.maximum(demand - ph.served, 0.0) * dt
        if ph.battery is not None:
            m.battery_j += abs(ph.battery.p_out) * dt
        vd = ph.v[ph.dev_seg]
        nd = len(self.device_ids)
        self._acc[:nd] += demand * dt
        self._acc[nd:2 * nd] += ph.served * dt
        self._acc[2 * nd] += feed * dt
        self._acc[2 * nd + 1] += (loss["conversion"] + loss["distribution"]) * dt
        self._acc_s += dt
        short = (ph.served < 0.99 * demand) | (vd < BROWNOUT_V_PU * self.sc.rack.bus_voltage)
        if bool(np.any(short & self.p1)):
            m.short_p1 = True

    def _end_period(self) -> None:
        m = self.meter
        mean_feed = m.period_feed_j / max(m.period_s, 1e-9)
        m.feed_peak_w = max(m.feed_peak_w, mean_feed)
        if mean_feed > self.sc.rack.breaker_limit_w:
            m.feed_violations += 1
        if m.short_p1:
            m.p1_brownouts += 1
        m.periods += 1
        m.short_p1 = False

    def _period_obs(self) -> tuple[dict[str, DeviceObs], float]:
        """The devices' mean power and utilisation over the period, and the mean feed (W)."""
        m, fr = self.meter, self.fr
        span = max(m.period_s, 1e-9)
        # what a device's meter shows is what it was served; `observe_demand` (a diagnostic
        # of what capping hides from the forecaster) shows what it asked instead
        seen = m.demand_j if self.observe_demand else m.served_j
        devs = {dv.id: DeviceObs(float(seen[k] / span), float(fr.physics.dev_util[k]))
                for k, dv in enumerate(self.sc.rack.devices)}
        feed = m.period_feed_j / span
        m.period_feed_j, m.period_s = 0.0, 0.0
        m.served_j[:] = 0.0
        m.demand_j[:] = 0.0
        return devs, feed

    def _record(self, t: float, alloc: Allocation | None) -> None:
        """One period of the time series: what the physics had, what the controller planned."""
        ph, sr, nd = self.fr.physics, self.series, len(self.device_ids)
        mean = self._acc / max(self._acc_s, 1e-9)
        self._acc[:] = 0.0
        self._acc_s = 0.0
        sr["t_s"].append(round(t, 3))
        sr["bus_vmin_v"].append(round(float(ph.v.min()), 4))
        sr["bus_vmax_v"].append(round(float(ph.v.max()), 4))
        sr["feed_w"].append(round(float(mean[2 * nd]), 2))
        sr["loss_w"].append(round(float(mean[2 * nd + 1]), 3))
        on = [ph.conv[n.id].enabled and not ph.conv[n.id].failed for n in self.sc.rack.nodes]
        sr["converters_on"].append(sum(on))
        for n, o in zip(self.sc.rack.nodes, on, strict=True):
            sr[f"node{n.id}.on"].append(int(o))
        for k, dev in enumerate(self.device_ids):
            sr[f"{dev}.demand_w"].append(round(float(mean[k]), 2))
            sr[f"{dev}.served_w"].append(round(float(mean[nd + k]), 2))
            plan = alloc.devices.get(dev, {}) if alloc is not None else {}
            for key in ("cap_w", "forecast_w", "p95_w"):
                v = plan.get(key)
                sr[f"{dev}.{key}"].append(None if v is None else round(float(v), 2))

    def _apply(self, ev: Event, period: int) -> None:
        f = ev.fault
        apply_fault(self.fr, f, self.device_ids)
        if f.kind in ("converter-failure", "link-cut") and f.node is not None:
            self.failed_at[f.node] = period  # re-share time counted from here

    def _reshared(self, nid: int, alloc: Allocation | None) -> bool:
        """The rack carries its load without node `nid`: the plan no longer counts on it, no
        converter is over its rating, every bus is in the band and nobody is short."""
        ph = self.fr.physics
        if alloc is not None and alloc.nodes[nid]["share_w"] > 0:
            return False
        for n in self.sc.rack.nodes:
            if ph.conv[n.id].i_out > n.iout_max * 1.001:
                return False
        vn = self.sc.rack.bus_voltage
        if np.any(ph.v < BROWNOUT_V_PU * vn):
            return False
        return bool(np.all(ph.served >= 0.99 * np.minimum(ph.dev_p, ph.dev_cap)))

    def step(self, p: int, t_ctrl: float | None = None) -> Allocation | None:
        """Period `p`: its events, a period of rack time, then what the host does at its end
        (the controller's decision in `controlled` mode, the baselines' otherwise). The
        controller is told the time `t_ctrl` (s; default the rack time at the period's end:
        a rack that runs in step with the wall clock passes the wall clock, so leases it
        holds run on the same clock as whoever granted them)."""
        sc, fr, io = self.sc, self.fr, self.io
        t = p * sc.period_s
        while self._events and self._events[0].at_s <= t:
            self._apply(self._events.pop(0), p)
        fr.run(sc.period_s, on_step=self._on_step)
        self._end_period()
        io.service()
        io.collect()
        alloc = None
        if self.ctrl is not None:
            now = t + sc.period_s if t_ctrl is None else t_ctrl
            while self._hints and self._hints[0].issue_t <= t + sc.period_s:  # the scheduler's
                h = self._hints.pop(0)  # hints, on the controller's clock
                shift = now - (t + sc.period_s)
                if h.kind == "start":
                    self.ctrl.hints.start(now, h.job, list(h.devices),
                                          max(h.start_t + shift, now), h.watts, h.duration_s)
                else:
                    self.ctrl.hints.pause(now, h.job, max(h.start_t + shift, now),
                                          h.duration_s, h.watts)
            alloc = self.ctrl.step(now,
                                   io.observe_nodes(), io.observe_devices(), io.battery(),
                                   io.feed_w())
            self.result.cycle_ms.append(alloc.elapsed_ms)
            self.result.fallbacks += alloc.fallback and alloc.state != "safe"
            self.result.safe_mode_periods += alloc.state == "safe"
            self._dispatch(alloc)
        elif self.mode == "even":
            self._even()
        else:
            for n in sc.rack.nodes:
                io.set_output(n.id, sc.rack.bus_voltage)
        for nid, since in list(self.failed_at.items()):
            if self._reshared(nid, alloc):
                self.reshare.append(p + 1 - since)
                del self.failed_at[nid]
        for _, _, body in fr.events[self._n_events:]:
            if body.get(d.K_EVENT) == d.EV_FAULT and body.get(d.K_FAULTS, 0) & d.FAULT_OT:
                self.meter.ot_trips += 1
            elif body.get(d.K_EVENT) == d.EV_WAKE:
                self.meter.wakes += 1
        self._n_events = len(fr.events)
        self._record(t + sc.period_s, alloc)
        return alloc

    def run(self, progress: Progress | None = None) -> RunResult:
        self.start()
        periods = int(round(self.sc.duration_s / self.sc.period_s))
        for p in range(periods):
            self.step(p)
            if progress is not None:
                progress(self.mode, p + 1, periods)
        self.reshare += [periods - s for s in self.failed_at.values()]  # never re-shared
        self.result.reshare_periods = self.reshare
        self.result.series = self.series
        return self.result


MODES = ("controlled", "even", "droop")


def arm_outcomes(res: RunResult, sc: Scenario) -> dict[str, Any]:
    """What an arm of a scenario cost: energy left unmet by priority (Wh: capped or browned
    out), brownouts and feed-limit violations (periods), converter switchings (on/off changes
    over the run), standby wakes, battery throughput (Wh in and out) and the losses (Wh)."""
    m = res.meter
    by_prio: dict[str, float] = {}
    for k, dv in enumerate(sc.rack.devices):
        key = f"p{dv.priority}"
        by_prio[key] = by_prio.get(key, 0.0) + float(m.capped_j[k]) / 3600.0
    switchings = 0
    for n in sc.rack.nodes:
        on = res.series.get(f"node{n.id}.on", [])
        switchings += sum(1 for a, b in zip(on, on[1:]) if a != b)
    return {"capped_wh": round(sum(by_prio.values()), 3),
            "feed_ramp_p99_w_per_s": ramp_p99(m),
            "capped_wh_by_priority": {k: round(v, 3) for k, v in sorted(by_prio.items())},
            "brownouts": m.p1_brownouts, "feed_limit_violations": m.feed_violations,
            "converter_switchings": switchings, "standby_wakes": m.wakes,
            "battery_throughput_wh": round(m.battery_j / 3600.0, 3),
            "loss_wh": round(m.loss_wh, 3)}


def ramp_p99(m: Meter) -> float:
    """The 99th percentile of the feed's ramp rate over the run (W/s, between consecutive
    RAMP_WINDOW_S means): what a utility or a generator sees of the rack's swings."""
    return round(float(np.percentile(np.frombuffer(m.ramps), 99)), 1) if m.ramps else 0.0


VALUE_OUTCOMES = ("capped_wh", "feed_limit_violations", "brownouts", "loss_wh")


def run_arms(sc: Scenario, arms: tuple[str, ...] = ("predictive", "reactive", "oracle"),
             progress: Progress | None = None, workers: int | None = None) -> dict[str, Any]:
    """The same scenario under each arm (the same rack, seed and events; only what feeds the
    allocator differs), and `prediction_value`: per outcome, the share of the reactive arm's
    gap to the oracle that the predictive arm closes (1: as good as perfect foresight, 0: no
    better than persistence; None where reactive and oracle do not differ); with the hinted
    arm, `hint_value`, the same for it. The arms go at once (`scenario.pool.run_all`, at most
    `workers`)."""
    t0 = time.perf_counter()
    results = run_all([RunSpec(sc, "controlled", arm, label=arm) for arm in arms], progress,
                      workers)
    out = {arm: arm_outcomes(res, sc) for arm, res in zip(arms, results, strict=True)}
    res = {"scenario": sc.name, "rack": sc.rack.name, "duration_s": sc.duration_s,
           "arms": out, "prediction_value": gap_closed(out, "predictive")}
    if "hinted" in out:
        res["hint_value"] = gap_closed(out, "hinted")
    res["elapsed_s"] = round(time.perf_counter() - t0, 2)
    return res


def gap_closed(out: dict[str, Any], arm: str) -> dict[str, float | None]:
    """Per outcome, the share of the reactive arm's gap to the oracle that `arm` closes."""
    value: dict[str, float | None] = {}
    if {arm, "reactive", "oracle"} <= set(out):
        for k in VALUE_OUTCOMES:
            gap = out["reactive"][k] - out["oracle"][k]
            value[k] = (None if abs(gap) < 1e-9
                        else round((out["reactive"][k] - out[arm][k]) / gap, 3))
    return value


def run(sc: Scenario, baselines: bool = True, progress: Progress | None = None,
        series: dict[str, Series] | None = None, workers: int | None = None) -> dict[str, Any]:
    """Outcomes of a scenario (and of its two baselines unless told not to). `progress` is
    told of every period; `series`, if given, receives each run's time series by mode. The
    runs go at once (`scenario.pool.run_all`, at most `workers`): `cycle_ms_p50`/`_p99`, the
    controller's step time, then include their contention for the CPUs (workers=1: alone)."""
    t0 = time.perf_counter()
    modes = MODES if baselines else MODES[:1]
    runs = dict(zip(modes, run_all([RunSpec(sc, m) for m in modes], progress, workers),
                    strict=True))
    res = runs["controlled"]
    if series is not None:
        series["controlled"] = res.series
    m = res.meter
    cyc = np.array(res.cycle_ms) if res.cycle_ms else np.zeros(1)
    out: dict[str, Any] = {
        "scenario": sc.name, "rack": sc.rack.name, "duration_s": sc.duration_s,
        "periods": m.periods,
        "feed_limit_violations": m.feed_violations, "priority1_brownouts": m.p1_brownouts,
        "max_reshare_periods": max(res.reshare_periods, default=0),
        "overtemp_trips": m.ot_trips, "standby_wakes": m.wakes,
        "energy_loss_wh": round(m.loss_wh, 3),
        "feed_energy_wh": round(m.feed_wh, 3), "feed_peak_w": round(m.feed_peak_w, 1),
        "feed_ramp_p99_w_per_s": ramp_p99(m),
        "smoothing_held_wh": round(m.smoothing_held_j / 3600.0, 3),
        "smoothing_burnt_wh": round(m.smoothing_burnt_j / 3600.0, 3),
        "safe_allocations": res.fallbacks, "safe_mode_periods": res.safe_mode_periods,
        "cycle_ms_p50": round(float(np.percentile(cyc, 50)), 3),
        "cycle_ms_p99": round(float(np.percentile(cyc, 99)), 3),
    }
    if baselines:
        for mode in ("even", "droop"):
            br = runs[mode]
            if series is not None:
                series[mode] = br.series
            b = br.meter
            out[f"baseline_{mode}_loss_wh"] = round(b.loss_wh, 3)
            out[f"baseline_{mode}_feed_limit_violations"] = b.feed_violations
            out[f"baseline_{mode}_priority1_brownouts"] = b.p1_brownouts
            out[f"baseline_{mode}_overtemp_trips"] = b.ot_trips
        out["loss_saved_vs_even_pct"] = round(
            100 * (1 - m.loss_wh / max(out["baseline_even_loss_wh"], 1e-9)), 2)
        out["loss_saved_vs_droop_pct"] = round(
            100 * (1 - m.loss_wh / max(out["baseline_droop_loss_wh"], 1e-9)), 2)
    out["elapsed_s"] = round(time.perf_counter() - t0, 2)
    return out


# what `[expect]` may name: the outcomes above, baselines included
OUTCOMES = ("feed_limit_violations", "priority1_brownouts", "max_reshare_periods",
            "overtemp_trips", "standby_wakes", "energy_loss_wh", "feed_energy_wh", "feed_peak_w",
            "feed_ramp_p99_w_per_s", "smoothing_held_wh", "smoothing_burnt_wh",
            "safe_allocations", "safe_mode_periods", "cycle_ms_p50", "cycle_ms_p99",
            "loss_saved_vs_even_pct", "loss_saved_vs_droop_pct",
            *(f"baseline_{m}_{k}" for m in ("even", "droop")
              for k in ("loss_wh", "feed_limit_violations", "priority1_brownouts",
                        "overtemp_trips")))
