# Node firmware behaviour under the real MicroPython interpreter: standby (an output held off
# that starts on its own when the bus sags), its refusals, its failsafe and its place in the
# allocation-free step. Run by tests/firmware/test_node.py with the heap capped; each case_*
# raises on failure.
import micropython

from mp_helpers import Rig, near, result
from pfproto import defs as d


class _SharedBus:
    """The bus the other converters hold at `v` while this one is off (it senses the bus past
    its ORing stage); once it runs, the bus is the higher of its own output and theirs."""

    def __init__(self, plant, v):
        self.plant = plant
        self.step = plant.advance
        self.v = v
        plant.advance = self.advance

    def advance(self, dt_s):
        p = self.plant
        self.step(dt_s)
        if p.vout < self.v:
            p.vout = self.v


def _standby(r, volts, wake, lease_ms=60000):
    return r.send(d.MSG_SETPOINT, {d.K_VOUT_COMMAND: float(volts), d.K_LEASE_MS: lease_ms,
                                   d.K_OPERATION: False, d.K_VOUT_WAKE: float(wake)})


def case_standby_starts_on_its_own_when_the_bus_sags():
    """A converter the host shed at light load (off, VOUT_WAKE set) starts by itself when
    the bus stays under VOUT_WAKE for DEBOUNCE steps, reports EVENT WAKE with the bus it
    saw, and regulates at VOUT_COMMAND; the bus only dipping for fewer steps does not wake
    it, nor does a bus in band."""
    r = Rig()
    bus = _SharedBus(r.plant, 12.2)
    r.open_session()
    assert result(_standby(r, 12.2, 11.64)) == d.RES_OK
    r.run(500)
    assert not r.hal.enabled and r.node.mode == d.MODE_OFF
    bus.v = 11.5  # two steps under the wake level: a glitch, not a sag
    r.run(2 * r.node.cfg.control_period_ms)
    bus.v = 12.2
    r.run(100)
    assert not r.hal.enabled
    r.link.clear()
    bus.v = 11.0  # the load came back and the converters on are at their limit
    r.run(5 * r.node.cfg.control_period_ms)
    assert r.hal.enabled, "standby did not wake"
    # it joins the live bus from where the bus is, not from 0 V: it sources at once
    assert r.node.ctrl.target_mv >= 11000, r.node.ctrl.target_mv
    evs = [b for b in r.link.of_type(d.MSG_EVENT) if b[d.K_EVENT] == d.EV_WAKE]
    assert len(evs) == 1 and near(evs[0][d.K_VALUE] * 1000, 11000, 5), evs
    # the host's renewal of that standby, sent before it heard of the wake: the lease is
    # renewed, the output left running
    assert result(_standby(r, 12.2, 11.64)) == d.RES_OK
    r.run(20)
    assert r.hal.enabled, "a renewal sent before the host heard of the wake stopped it"
    bus.v = 0.0  # the others give way: this one carries the load at its setpoint
    r.run(400)
    assert r.node.mode == d.MODE_CV and near(r.hal.vout_mv, 12200, 30), r.hal.vout_mv
    # the host's next setpoint is obeyed again: off means off
    assert result(r.setpoint(0.0, 60000, on=False)) == d.RES_OK
    r.run(50)
    assert not r.hal.enabled


def case_standby_wake_is_allocation_free():
    """The wake runs inside the control step (an interrupt on a board): no allocation."""
    r = Rig()
    bus = _SharedBus(r.plant, 12.2)
    r.open_session()
    assert result(_standby(r, 12.2, 11.64)) == d.RES_OK
    period = r.node.cfg.control_period_ms
    for i in range(60):
        if i == 10:
            bus.v = 11.0
        r.hal.advance(period)
        micropython.heap_lock()
        try:
            r.node.step()
        finally:
            micropython.heap_unlock()
        r.node.service()
    assert r.hal.enabled and r.node.mode in (d.MODE_SOFTSTART, d.MODE_CV), r.node.mode


def case_standby_disarmed_by_the_failsafe():
    """A failsafe trip hands the output to the failsafe's policy: a standby armed before
    it does not wake afterwards (here the policy is off, and the lease is gone)."""
    r = Rig()
    bus = _SharedBus(r.plant, 12.2)
    r.open_session()
    assert result(r.config(FAILSAFE=d.FS_OFF, HEARTBEAT_TIMEOUT_MS=500)) == d.RES_OK
    assert result(_standby(r, 12.2, 11.64, lease_ms=60000)) == d.RES_OK
    r.run(1000, heartbeat=False)  # the host goes quiet: failsafe (off)
    assert r.node.fs.latched
    bus.v = 11.0
    r.run(200, heartbeat=False)
    assert not r.hal.enabled and r.node.wake_mv == 0


def case_plain_off_and_bad_standby_values():
    """Without VOUT_WAKE an off output stays off however low the bus; a wake level at or
    above VOUT_COMMAND, or a standby VOUT_COMMAND it could not run at, is refused with
    nothing changed."""
    r = Rig()
    bus = _SharedBus(r.plant, 10.0)
    r.open_session()
    assert result(r.setpoint(0.0, 60000, on=False)) == d.RES_OK
    r.run(300)
    assert not r.hal.enabled
    for volts, wake in ((12.0, 12.0), (12.0, 12.5), (0.0, 11.0)):
        ack = _standby(r, volts, wake)
        assert result(ack) == d.RES_RANGE and ack[d.K_FIELD] == d.K_VOUT_WAKE, (volts, wake, ack)
        r.run(100)
        assert not r.hal.enabled and r.node.wake_mv == 0
    bus.v = 12.0
