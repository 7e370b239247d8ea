"""Physics of an emulated rack: converters, the DC mesh, devices, temperatures, battery.

Converters are averaged models: each holds its output at the reference its
firmware writes (the converter's own fast loop, in hardware on a real board)
behind its output resistance, sources current only (an ORing stage blocks
reverse current), never more than its power stage's cycle-by-cycle limit
(1.1 x rated current; the firmware's current limit is the slower outer one),
and loses power along its efficiency curve, which heats it
with a first-order thermal model. The mesh is stepped in time (implicit Euler on
the segment bus capacitances, Newton's method inside), with devices as
constant-power loads (constant impedance below 70 % of the bus voltage, where
real supplies drop out). Device
demand follows a utilisation trace per device. Units SI; current positive when
a converter sources power.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from powerflow.emulator.workloads import JobPlan, Workload
from powerflow.model.mesh import MeshIndex, conductance, port_closed
from powerflow.model.rack import Rack

LOW_V = 0.7  # fraction of bus voltage below which loads behave as resistors
# a battery backup unit holds the bus at BBU_HOLD_V_PU x nominal when it sags below, and
# recharges only while the bus is above BBU_FLOAT_V_PU x nominal
BBU_HOLD_V_PU = 0.95
BBU_FLOAT_V_PU = 0.97
# ... and, discharging at a commanded power, never drives the bus above BBU_CLAMP_V_PU x
# nominal (the top of the band the host plans in): its output stage regulates its voltage
BBU_CLAMP_V_PU = 1.03


DIODE_V = 0.005  # V: the ORing stage's turn-on, blended over +-5 mV so Newton sees no corner


def _source(x: float, r: float, i_hw: float) -> tuple[float, float]:
    """A converter's output current (A) and its slope dI/dx (S) at x = vref - vbus (V):
    x / r when conducting, nothing when the bus is above the reference (ORing), a
    quadratic blend across +-DIODE_V, and no more than the power stage's limit."""
    dlt = DIODE_V
    if x >= dlt:
        i, di = x / r, 1.0 / r
    elif x > -dlt:
        i, di = (x + dlt) ** 2 / (4.0 * dlt * r), (x + dlt) / (2.0 * dlt * r)
    else:
        return 0.0, 0.0
    return (i_hw, 0.0) if i >= i_hw else (i, di)


def _norm(x: np.ndarray) -> float:
    """Euclidean norm of a vector: `np.linalg.norm`'s own sum, without its checks."""
    return math.sqrt(float(x.dot(x)))


def _unit(seed: int, k: int) -> float:
    """A deterministic pseudo-random number in [0, 1) for integer step k."""
    x = (k * 2654435761 + seed * 97531) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x45D9F3B) & 0xFFFFFFFF
    x ^= x >> 16
    return x / 4294967296.0


def utilisation(kind: str, t: float, seed: int) -> float:
    """Device utilisation (0..1) at time t (s) for a trace kind."""
    if kind == "steady":
        return 0.6 + 0.02 * (_unit(seed, int(t)) - 0.5)
    if kind == "diurnal":
        return 0.55 + 0.3 * math.sin(2 * math.pi * (t / 86400.0 - 0.25)) + 0.03 * _unit(seed, int(t))
    if kind == "training":
        # steps of ~0.95 with a dip each 10 s iteration boundary and a checkpoint every 600 s
        if t % 600.0 < 20.0:
            return 0.25
        return 0.45 if t % 10.0 < 1.0 else 0.95
    if kind == "inference":
        # bursts of requests: each second may start a burst lasting 2 s
        busy = sum(1 for k in (int(t), int(t) - 1) if _unit(seed, k) < 0.45)
        return min(1.0, 0.25 + 0.35 * busy)
    if kind == "spikes":
        return 1.0 if _unit(seed, int(t * 2)) < 0.03 else 0.45
    raise ValueError(f"unknown trace {kind!r}")


@dataclass
class SensorFault:
    stuck: float | None = None  # the reading stays at this value
    drift_per_s: float = 0.0  # added to the reading, growing with time since injection
    since: float = 0.0


@dataclass(eq=False)  # compared by identity: the physics keeps one per node
class ConverterState:
    node_id: int
    seg: int
    rating_w: float
    r_out: float
    eff_x: np.ndarray
    eff_y: np.ndarray
    vref: float = 0.0  # V, written by the firmware
    enabled: bool = False
    ports: int = 0  # bit mask written by the firmware
    failed: bool = False  # fault injection: the power stage is dead
    temp_c: float = 25.0
    i_out: float = 0.0
    p_loss: float = 0.0
    p_in: float = 0.0
    rth: float = 1.5  # degC per W of loss
    tau_s: float = 60.0
    i_hw: float = 55.0  # A: the power stage's own cycle-by-cycle current limit
    sensor_faults: dict[str, SensorFault] = field(default_factory=dict)

    def efficiency(self, p_out: float) -> float:
        x = p_out / self.rating_w
        return float(np.interp(x, self.eff_x, self.eff_y))


@dataclass(eq=False)
class BatteryState:
    """A battery backup unit: it holds the bus at `v_hold` when the bus sags below it
    (discharging at most p_discharge_max), and recharges at up to p_charge_max when the
    bus is above `v_float`. `p_cmd` (W, + discharging), when set, overrides both: the
    allocator's peak shaving, delivered at that power but never above `v_clamp`."""

    seg: int
    capacity_wh: float
    p_charge_max: float
    p_discharge_max: float
    efficiency: float
    soc: float
    v_hold: float
    v_float: float
    v_clamp: float  # V, the most it drives the bus to while discharging at a command
    r: float = 0.002  # ohm, the unit's output resistance when holding the bus
    p_cmd: float | None = None
    p_out: float = 0.0  # W delivered to the bus (negative while charging)
    # the unit's own fast peak-shaving loop: when set, it discharges whatever the rack's feed
    # draw exceeds this (W), adjusted every physics step on top of p_cmd
    shave_above_w: float | None = None
    p_shave: float = 0.0


class RackPhysics:
    """State and time-stepping of one rack. `step(dt)` advances it; `readings(node)` gives
    what a node's sensors see."""

    def __init__(self, rack: Rack, seed: int = 0, ambient_c: float = 25.0, humidity: float = 40.0):
        self.rack = rack
        self.t = 0.0
        self.seed = seed
        self.ambient_c = ambient_c
        self.humidity = humidity
        self.load_scale = 1.0  # multiplies every device's demand (scenarios)
        self.trace_speed = 1.0  # device traces run this much faster than rack time (time-lapse)
        self.workload: Workload | None = None  # a scenario's jobs (they override device traces)
        self.segs = list(rack.segments)
        self.mesh = m = MeshIndex.of(rack)
        self.conv = {n.id: ConverterState(n.id, int(m.node_seg[k]), n.rating_w,
                                          max(n.r_out, 1e-5),
                                          np.array([e[0] for e in n.efficiency]),
                                          np.array([e[1] for e in n.efficiency]), temp_c=ambient_c,
                                          i_hw=1.1 * n.iout_max)
                     for k, n in enumerate(rack.nodes)}
        self.bf, self.bt, self.br = m.branch_from, m.branch_to, m.branch_r
        self.manual_closed = np.array([b.closed for b in rack.branches])  # ties without a port
        self.dev_seg = m.device_seg
        self.dev_seed = [seed * 1000 + k for k in range(len(rack.devices))]
        self.dev_util = np.zeros(len(rack.devices))
        self.dev_p = np.array([d.p_nom_w for d in rack.devices])  # W demanded
        # W the device would draw without power smoothing (what it follows, unlimited)
        self.dev_free = self.dev_p.copy()
        self.dev_cap = np.array([d.p_max_w for d in rack.devices])  # W limit set by the host
        self.dev_extra = np.zeros(len(rack.devices))  # W added by a load-spike fault
        # power smoothing the host commands (W/s the device's power may rise / fall)
        self.dev_ramp_up = np.full(len(rack.devices), np.inf)
        self.dev_ramp_down = np.full(len(rack.devices), np.inf)
        self.dev_extra_until = np.zeros(len(rack.devices))
        self.v = np.full(len(self.segs), 0.0)
        b = rack.battery
        self.battery = None if b is None else BatteryState(
            m.segment[b.segment], b.capacity_wh, b.p_charge_max_w, b.p_discharge_max_w, b.efficiency,
            b.soc, BBU_HOLD_V_PU * rack.bus_voltage, BBU_FLOAT_V_PU * rack.bus_voltage,
            BBU_CLAMP_V_PU * rack.bus_voltage)
        # per node: (port, segment on the far side of the tie it operates)
        self._far: dict[int, list[tuple[int, int]]] = {n.id: [] for n in rack.nodes}
        for k, br in enumerate(rack.branches):
            if br.port is not None:
                seg = self.conv[br.port[0]].seg
                other = int(self.bt[k] if self.bf[k] == seg else self.bf[k])
                self._far[br.port[0]].append((br.port[1], other))
        self.served = np.zeros(len(rack.devices))  # W actually delivered
        self.converged = True  # the last solve met its tolerance
        self._p_max_seg = np.zeros(len(self.segs))  # W: the most the devices of a segment draw
        np.add.at(self._p_max_seg, self.dev_seg, np.array([d.p_max_w for d in rack.devices]))
        if self.battery is not None:  # charging is a constant-power load too
            self._p_max_seg[self.battery.seg] += self.battery.p_charge_max
        # C/dt of each segment's bus capacitance, S (see `solve`)
        self._c_dt = 2.0 * np.maximum(self._p_max_seg, 1.0) / (LOW_V * rack.bus_voltage) ** 2
        # per set of closed ties: (conductance, S; the step's Jacobian before the sources and
        # loads). Ties change seldom and each step needs both, so they are made once per set.
        self._matrices_of: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        self._update_devices(0.0)

    def follow(self, jobs: JobPlan) -> None:
        """Put the devices under `jobs` (a scenario's, with its seed and trace speed) in place
        of their traces, from now: the demand at this instant is already the jobs'."""
        if jobs.jobs:
            self.workload = Workload(len(self.rack.devices), jobs.jobs, jobs.seed)
            self.trace_speed = jobs.trace_speed
            self._update_devices(0.0)

    # ---- commands from the firmware and from fault injection --------------------------
    def set_actuators(self, node_id: int, vref_v: float, enabled: bool, ports: int) -> None:
        c = self.conv[node_id]
        c.vref, c.enabled, c.ports = vref_v, enabled, ports

    def apply_devices(self, caps: dict[str, float | None], battery_w: float | None,
                      shave_above_w: float | None,
                      ramps: dict[str, tuple[float | None, float | None]] | None = None
                      ) -> None:
        """The host's device caps (W, None = uncapped) and battery command (W, +
        discharging; `shave_above_w`: feed draw above which the battery's own loop acts)."""
        for k, dv in enumerate(self.rack.devices):
            cap = caps.get(dv.id)
            self.dev_cap[k] = dv.p_max_w if cap is None else cap
        if self.battery is not None:
            self.battery.p_cmd = battery_w
            self.battery.shave_above_w = shave_above_w
        if ramps is not None:
            self.apply_ramps(ramps)

    def apply_ramps(self, ramps: dict[str, tuple[float | None, float | None]]) -> None:
        """Power smoothing per device: (up, down) W/s (None: not limited that way); a device
        not named is not limited. A smoothed device ramps down no faster than allowed, burning
        the difference, as a GPU's power smoothing does."""
        for k, dv in enumerate(self.rack.devices):
            up, down = ramps.get(dv.id, (None, None))
            self.dev_ramp_up[k] = np.inf if not up else up
            self.dev_ramp_down[k] = np.inf if not down else down

    def branch_closed(self) -> np.ndarray:
        closed = self.manual_closed.copy()
        for k, b in enumerate(self.rack.branches):
            if b.port is not None:
                owner = self.conv[b.port[0]]
                closed[k] = port_closed(owner.ports, b.port[1])
        return closed

    def _matrices(self, closed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(G, diag(C/dt) + G) with the ties `closed` (both read-only)."""
        key = closed.tobytes()
        got = self._matrices_of.get(key)
        if got is None:
            if len(self._matrices_of) >= 256:  # bound it: a rack toggling every tie
                self._matrices_of.clear()
            g = conductance(self.mesh, closed)
            got = self._matrices_of[key] = (g, np.diag(self._c_dt) + g)
        return got

    # ---- time --------------------------------------------------------------------------
    def utilisations(self, t: float) -> np.ndarray:
        """What each device is asked to do at rack time `t` (0..1): its job's, else its trace's."""
        tt = t * self.trace_speed
        out = (np.full(len(self.rack.devices), np.nan) if self.workload is None
               else self.workload.utilisation(tt))
        for k, d in enumerate(self.rack.devices):
            if np.isnan(out[k]):
                out[k] = utilisation(d.trace, tt, self.dev_seed[k])
        return out

    def _update_devices(self, dt: float) -> None:
        a = 1.0 if dt <= 0 else min(1.0, dt / 0.2)  # power follows utilisation within ~0.2 s
        us = self.utilisations(self.t)
        for k, d in enumerate(self.rack.devices):
            u = float(us[k])
            self.dev_util[k] = u
            target = min((d.p_min_w + u * (d.p_max_w - d.p_min_w)) * self.load_scale, d.p_max_w)
            if self.t < self.dev_extra_until[k]:
                target += self.dev_extra[k]
            self.dev_free[k] += (target - self.dev_free[k]) * a
            step = (target - self.dev_p[k]) * a
            if dt > 0:  # power smoothing: the device's power moves no faster than commanded
                step = min(max(step, -self.dev_ramp_down[k] * dt), self.dev_ramp_up[k] * dt)
            self.dev_p[k] += step

    def step(self, dt: float) -> None:
        self.t += dt
        self._update_devices(dt)
        self.solve(dt)
        bat = self.battery
        if bat is not None:
            if bat.shave_above_w is None or bat.soc <= 0.0:
                bat.p_shave = 0.0
            else:  # integral action on the feed's excess, as a BBU's local loop does
                room = bat.p_discharge_max - max(bat.p_cmd or 0.0, 0.0)
                excess = self.feed_power_w() - bat.shave_above_w
                bat.p_shave = min(max(bat.p_shave + 0.5 * excess, 0.0), max(room, 0.0))
        for c in self.conv.values():
            steady = self.ambient_c + c.rth * c.p_loss
            c.temp_c += (steady - c.temp_c) * min(1.0, dt / c.tau_s)

    def solve(self, dt: float = 0.005, iters: int = 50) -> None:
        """Advance the segment voltages by one implicit-Euler step of the bus capacitances.

        Each segment's capacitance is sized so that C/dt exceeds the largest negative
        conductance its constant-power loads can show, which makes the step's Jacobian
        positive definite: one operating point, reached continuously from the last, as
        the bus capacitors make it happen (a static solve would also find the unstable
        low-voltage branch of constant-power loads).
        """
        ns = len(self.segs)
        g, jac0 = self._matrices(self.branch_closed())
        live = [c for c in self.conv.values() if c.enabled and not c.failed and c.vref > 0]
        p_load = np.zeros(ns)
        np.add.at(p_load, self.dev_seg, np.minimum(self.dev_p, self.dev_cap))
        vlow = LOW_V * self.rack.bus_voltage
        dt = max(dt, 1e-4)
        c_dt = self._c_dt
        v_prev = self.v.copy()

        def residual(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            res = c_dt * (v - v_prev) + g @ v
            jac = jac0.copy()
            diag = jac.reshape(-1)[::ns + 1]  # a view: adding to it adds to jac's diagonal
            for c in live:
                i, di = _source(c.vref - v[c.seg], c.r_out, c.i_hw)
                res[c.seg] -= i
                jac[c.seg, c.seg] += di
            bat = self.battery
            if bat is not None:
                i_b, g_b = self._battery_current(v[bat.seg])
                res[bat.seg] -= i_b
                jac[bat.seg, bat.seg] += g_b
            hi = v >= vlow
            vs = np.maximum(v, 1e-9)
            res += np.where(hi, p_load / vs, p_load * v / vlow ** 2)
            diag += np.where(hi, -p_load / vs ** 2, p_load / vlow ** 2)
            return res, jac

        v = v_prev.copy()
        self.converged = False
        res, jac = residual(v)
        for _ in range(iters):
            dv = np.linalg.solve(jac, -res)
            step = float(np.max(np.abs(dv)))
            if step > 1.0:
                dv *= 1.0 / step
            norm = _norm(res)
            t = 1.0
            for _ in range(12):  # backtrack until the residual shrinks
                trial = np.maximum(v + t * dv, 0.0)
                res_t, jac_t = residual(trial)
                norm_t = _norm(res_t)
                if norm_t < norm or t < 1e-3:
                    break
                t *= 0.5
            v, res, jac = trial, res_t, jac_t
            if step * t < 1e-9 or norm_t < 1e-9:
                self.converged = True
                break
        self.v = v
        live_ids = {c.node_id for c in live}
        for c in self.conv.values():
            on = c.node_id in live_ids
            c.i_out = _source(c.vref - v[c.seg], c.r_out, c.i_hw)[0] if on else 0.0
            p_out = c.i_out * v[c.seg]
            idle = 0.005 * c.rating_w if c.enabled and not c.failed else 0.0
            eta = c.efficiency(p_out) if p_out > 0 else 1.0
            c.p_loss = p_out * (1.0 / eta - 1.0) + idle
            c.p_in = p_out + c.p_loss
        if self.battery is not None:
            bat = self.battery
            bat.p_out = self._battery_current(v[bat.seg])[0] * v[bat.seg]
            # state of charge: discharging draws p/eff from the cells, charging stores p*eff
            e = bat.p_out / bat.efficiency if bat.p_out > 0 else bat.p_out * bat.efficiency
            bat.soc = min(1.0, max(0.0, bat.soc - e * dt / 3600.0 / bat.capacity_wh))
        vd = v[self.dev_seg]
        demand = np.minimum(self.dev_p, self.dev_cap)
        self.served = np.where(vd >= vlow, demand, demand * (vd / vlow) ** 2)

    def _battery_current(self, vbus: float) -> tuple[float, float]:
        """(current into the bus, A; its derivative -dI/dV, S) at bus voltage `vbus`."""
        b = self.battery
        assert b is not None
        vb = max(vbus, 1.0)
        if b.p_cmd is not None or b.p_shave > 0:
            p = (b.p_cmd or 0.0) + b.p_shave
            if (p > 0 and b.soc <= 0.0) or (p < 0 and b.soc >= 1.0):
                return 0.0, 0.0
            p = min(max(p, -b.p_charge_max), b.p_discharge_max)
            if p > 0:
                # a unit discharging at a commanded power still regulates its output voltage:
                # it never drives the bus above v_clamp (a lightly loaded segment whose
                # converter is not yet on would otherwise be pushed to twice its voltage,
                # and every converter on it trip on overvoltage)
                i_v = (b.v_clamp - vbus) / b.r
                if i_v <= 0.0:
                    return 0.0, 0.0
                if i_v < p / vb:
                    return i_v, 1.0 / b.r
            return p / vb, p / vb ** 2  # constant power: dI/dV = -p / v^2
        if b.soc > 0.0 and vbus < b.v_hold:
            i = (b.v_hold - vbus) / b.r
            imax = b.p_discharge_max / vb
            return (imax, 0.0) if i >= imax else (i, 1.0 / b.r)
        if b.soc < 1.0 and vbus > b.v_float:
            ramp = 0.01 * self.rack.bus_voltage  # charge power rises over 1 % above v_float
            if vbus - b.v_float < ramp:
                p = b.p_charge_max * (vbus - b.v_float) / ramp
                return -p / vb, b.p_charge_max / ramp / vb - p / vb ** 2
            return -b.p_charge_max / vb, -b.p_charge_max / vb ** 2
        return 0.0, 0.0

    # ---- what sensors see --------------------------------------------------------------
    def readings(self, node_id: int) -> dict[str, float]:
        c = self.conv[node_id]
        r = {
            "vin": self.rack.feed_voltage, "iin": c.p_in / self.rack.feed_voltage,
            "vout": float(self.v[c.seg]), "iout": c.i_out, "temp1": c.temp_c,
            "temp2": c.temp_c - 0.3 * (c.temp_c - self.ambient_c), "ambient": self.ambient_c,
            "humidity": self.humidity,
        }
        for name, fault in c.sensor_faults.items():
            if fault.stuck is not None:
                r[name] = fault.stuck
            else:
                r[name] += fault.drift_per_s * (self.t - fault.since)
        return r

    def port_voltages(self, node_id: int) -> list[float]:
        """Voltage on the far side of each of a node's 8 ports (0 where no tie)."""
        out = [0.0] * 8
        for port, other in self._far[node_id]:
            out[port] = float(self.v[other])
        return out

    # ---- totals -------------------------------------------------------------------------
    def feed_power_w(self) -> float:
        return float(sum(c.p_in for c in self.conv.values()))

    def loss_w(self) -> dict[str, float]:
        conv = float(sum(c.p_loss for c in self.conv.values()))
        closed = self.branch_closed()
        i = (self.v[self.bf] - self.v[self.bt]) / self.br
        dist = float(np.sum(np.where(closed, i * i * self.br, 0.0)))
        return {"conversion": conv, "distribution": dist}
