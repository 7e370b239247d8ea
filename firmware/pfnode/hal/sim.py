"""`sim` HAL backend: the node's hardware replaced by a converter model.

`SimHal` presents the same integer readings as a board. Its `plant` computes
the physics; `SimHal.sample()` only copies the plant's latest readings, so the
control step stays allocation-free even though the plant uses floats. The
plant is advanced by whoever owns simulated time (`advance()`), outside the
control step. The emulated rack (host/powerflow/emulator) supplies a plant of
its own that follows the rack's physics model; `ConverterPlant` is the simple
stand-alone one used by the firmware tests and the single-node demo.
"""

from pfnode.clock import TICKS_MAX, ticks_add, ticks_diff

try:
    from time import ticks_ms as _real_ticks_ms  # type: ignore[attr-defined]
except ImportError:  # CPython
    import time as _time

    def _real_ticks_ms():  # type: ignore[misc]
        return int(_time.monotonic() * 1000) % (TICKS_MAX + 1)  # type: ignore[attr-defined]


class ConverterPlant:
    """Averaged model of one DC-DC converter and its load (SI units, floats).

    The converter's hardware loop holds its output at the reference minus an
    output-resistance drop, up to its cycle-by-cycle current limit `i_hw`; the
    load is a resistance plus a constant current.
    Converter temperature follows a first-order model of its losses.
    """

    def __init__(self, vin=48.0, rout=0.004, load_ohm=1.0, load_a=0.0, efficiency=0.95,
                 ambient_c=25.0, humidity=40.0, rth=2.0, tau_s=20.0, nports=2, i_hw=55.0):
        self.vin = vin  # V
        self.rout = rout  # ohm
        self.load_ohm = load_ohm  # ohm (0 or less: no resistive load)
        self.load_a = load_a  # A, constant-current part of the load
        self.efficiency = efficiency
        self.ambient_c = ambient_c  # degC
        self.humidity = humidity  # %RH
        self.rth = rth  # degC per W of converter loss
        self.tau_s = tau_s  # s, thermal time constant
        self.i_hw = i_hw  # A, the power stage's cycle-by-cycle current limit
        self.temp_c = ambient_c  # degC, converter hot spot
        self.vref = 0.0  # V, set through the HAL
        self.enabled = False
        self.ports_closed = [False] * nports
        self.port_far_v = [0.0] * nports  # V, what sits on the other side of each port
        self.vout = 0.0
        self.iout = 0.0
        self.iin = 0.0
        # sensor faults for tests: None or a fixed value in SI units
        self.stuck_vout = None
        self.stuck_temp = None

    def advance(self, dt_s):
        if self.enabled and self.vref > 0.0:
            g = 1.0 / self.load_ohm if self.load_ohm > 0.0 else 0.0
            # vout = vref - rout * (vout * g + load_a)
            v = (self.vref - self.rout * self.load_a) / (1.0 + self.rout * g)
            if v < 0.0:
                v = 0.0
            i = v * g + self.load_a if v > 0.0 else 0.0
            if i > self.i_hw:  # the hardware limit holds the current; the voltage gives way
                i = self.i_hw
                v = (i - self.load_a) / g if g > 0.0 else 0.0
                if v < 0.0:
                    v = 0.0
            self.vout = v
            self.iout = i
        else:
            self.vout = 0.0
            self.iout = 0.0
        pout = self.vout * self.iout
        loss = pout * (1.0 - self.efficiency) / self.efficiency + (0.5 if self.enabled else 0.0)
        self.iin = (pout + loss) / self.vin if self.vin > 0 else 0.0
        steady = self.ambient_c + self.rth * loss
        a = dt_s / self.tau_s
        if a > 1.0:
            a = 1.0
        self.temp_c += (steady - self.temp_c) * a


def _mi(x):
    return int(x * 1000.0)


class SimHal:
    """The `sim` backend. `clock_ms` is a start value for a virtual clock; None = real time."""

    def __init__(self, plant=None, clock_ms=None, nports=2):
        self.plant = plant if plant is not None else ConverterPlant(nports=nports)
        self.nports = len(self.plant.ports_closed)
        self._virtual = clock_ms is not None
        self._now = clock_ms if clock_ms is not None else 0
        self.vin_mv = self.iin_ma = self.vout_mv = self.iout_ma = 0
        self.temp1_mc = self.temp2_mc = self.ambient_mc = self.humidity_mpct = 0
        self._port_mv = [0] * self.nports
        self.vref_mv = 0
        self.enabled = False
        self.ports_closed = [False] * self.nports
        self.wdt_timeout_ms = 0
        self.wdt_feeds = 0
        self._cause = 0
        self._last_sync = self.ticks_ms()
        self.refresh()

    # ---- time -------------------------------------------------------------
    def ticks_ms(self):
        return self._now if self._virtual else _real_ticks_ms()

    def advance(self, ms):
        """Move the virtual clock on by `ms` and the plant with it."""
        self._now = ticks_add(self._now, ms)  # type: ignore[type-var]
        self.sync(ms / 1000.0)

    def background(self):
        """Runner hook, outside the control step: on the real clock, advance the plant."""
        if self._virtual:
            return
        now = _real_ticks_ms()
        dt = ticks_diff(now, self._last_sync)
        if dt > 0:
            self._last_sync = now
            self.sync(dt / 1000.0)

    def sync(self, dt_s):
        """Hand the actuator commands to the plant, advance it `dt_s`, take new readings."""
        p = self.plant
        p.vref = self.vref_mv / 1000.0 if self.vref_mv > 0 else 0.0
        p.enabled = self.enabled
        for i in range(self.nports):
            p.ports_closed[i] = self.ports_closed[i]
        p.advance(dt_s)
        self.refresh()

    def refresh(self):
        """Take the plant's present state as the next sensor readings (allocates: not in step)."""
        p = self.plant
        self.vin_mv = _mi(p.vin)
        self.iin_ma = _mi(p.iin)
        self.vout_mv = _mi(p.vout if p.stuck_vout is None else p.stuck_vout)
        self.iout_ma = _mi(p.iout)
        t = p.temp_c if p.stuck_temp is None else p.stuck_temp
        self.temp1_mc = _mi(t)
        self.temp2_mc = _mi(t - 0.3 * (t - p.ambient_c))
        self.ambient_mc = _mi(p.ambient_c)
        self.humidity_mpct = _mi(p.humidity)
        for i in range(self.nports):
            self._port_mv[i] = _mi(p.vout if p.ports_closed[i] else p.port_far_v[i])

    # ---- the HAL ----------------------------------------------------------
    def sample(self):
        pass  # readings were taken by refresh(); a board reads its ADCs here

    def port_mv(self, port):
        return self._port_mv[port]

    # actuators only record the command (no floats here: the control step calls them)
    def set_vref(self, mv):
        self.vref_mv = mv

    def set_enable(self, on):
        self.enabled = on

    def set_port(self, port, closed):
        self.ports_closed[port] = closed

    def wdt_start(self, timeout_ms):
        self.wdt_timeout_ms = timeout_ms

    def wdt_feed(self):
        self.wdt_feeds += 1

    def reset_cause(self):
        return self._cause
