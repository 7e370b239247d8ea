# Node firmware under the real MicroPython interpreter: failsafe (lease expiry, host silence, revert, off), the watchdog, the lease across a tick wrap-around.
# Run by tests/firmware/test_node.py with the heap capped; each case_* raises on failure.

from mp_helpers import Rig, near, result
from pfnode.clock import TICKS_PERIOD
from pfproto import defs as d


def case_failsafe_on_lease_expiry_ramps_down_and_latches():
    r = Rig()
    r.open_session()
    r.setpoint(12.0, 1000)
    r.run(900)
    assert r.hal.enabled and r.node.mode == d.MODE_CV
    r.run(150)
    assert r.node.mode == d.MODE_FAILSAFE and r.node.fs.latched
    # ramps at VOUT_TRANSITION_RATE (100 V/s = 0.5 V a step), then switches off
    prev = r.hal.vout_mv
    for _ in range(30):
        r.run(5)
        assert prev - r.hal.vout_mv <= 600, (prev, r.hal.vout_mv)
        prev = r.hal.vout_mv
    assert not r.hal.enabled
    assert result(r.setpoint(12.0)) == d.RES_STATE
    assert r.telemetry()[d.K_FAULTS] & d.FAULT_FAILSAFE
    assert result(r.send(d.MSG_CLEAR_FAULTS, {})) == d.RES_OK
    assert result(r.setpoint(12.0, 60000)) == d.RES_OK
    r.run(200)
    assert near(r.hal.vout_mv, 12000, 15)


def case_failsafe_on_host_silence_holds():
    r = Rig()
    r.open_session()
    assert result(r.config(FAILSAFE=d.FS_HOLD, HEARTBEAT_TIMEOUT_MS=1000)) == d.RES_OK
    r.setpoint(12.0, 60000)
    r.run(2000)  # heartbeats keep it alive
    assert r.node.mode == d.MODE_CV
    r.run(1100, heartbeat=False)
    assert r.node.mode == d.MODE_FAILSAFE
    assert r.hal.enabled and near(r.hal.vout_mv, 12000, 15), "hold keeps the output"
    assert r.node.status_word() & d.SW_MFR


def _revert(was_on):
    # on: a setpoint above nominal falls back to it; off (phase-shed): comes on at it
    if True:
        r = Rig()
        r.open_session()
        assert result(r.config(FAILSAFE=d.FS_REVERT, VOUT_FAILSAFE=12.0,
                               HEARTBEAT_TIMEOUT_MS=1000)) == d.RES_OK
        if was_on:
            r.setpoint(12.5, 60000)
        else:
            r.send(d.MSG_SETPOINT, {d.K_VOUT_COMMAND: 0.0, d.K_LEASE_MS: 60000,
                                    d.K_OPERATION: False})
        r.run(500)
        assert r.hal.enabled == was_on
        r.run(1500, heartbeat=False)
        assert r.node.mode == d.MODE_FAILSAFE and r.node.fs.latched
        assert r.hal.enabled and near(r.hal.vout_mv, 12000, 20), (was_on, r.hal.vout_mv)
        assert result(r.send(d.MSG_CLEAR_FAULTS, {})) == d.RES_OK
        assert result(r.setpoint(12.3, 60000)) == d.RES_OK
        r.run(300)
        assert r.node.mode == d.MODE_CV and near(r.hal.vout_mv, 12300, 20)


def case_failsafe_revert_falls_back_to_the_nominal_voltage():
    _revert(True)


def case_failsafe_revert_brings_an_off_converter_on_at_the_nominal_voltage():
    _revert(False)


def case_failsafe_revert_needs_a_voltage_the_node_may_regulate_to():
    r = Rig()
    r.open_session()
    assert result(r.config(VOUT_FAILSAFE=30.0)) == d.RES_RANGE
    assert result(r.config(FAILSAFE=d.FS_REVERT, VOUT_UV_FAULT_LIMIT=10.0,
                           VOUT_UV_WARN_LIMIT=10.5, VOUT_FAILSAFE=9.0)) == d.RES_RANGE
    assert r.node.cfg.failsafe == d.FS_RAMP_DOWN, "nothing of a refused CONFIG applies"


def case_failsafe_off_is_immediate():
    r = Rig()
    r.open_session()
    assert result(r.config(FAILSAFE=d.FS_OFF)) == d.RES_OK
    r.setpoint(12.0, 500)
    r.run(495)
    assert r.hal.enabled
    r.run(10)
    assert not r.hal.enabled and r.node.mode == d.MODE_FAILSAFE


def case_watchdog_fed_only_when_control_and_comms_check_in():
    r = Rig()
    n = r.node
    feeds = r.hal.wdt_feeds
    n.step()
    assert not n.feed_watchdog()
    n.step()
    n.service()
    assert n.feed_watchdog() and r.hal.wdt_feeds == feeds + 1
    n.service()
    assert not n.feed_watchdog(), "comms alone must not feed"


def case_lease_survives_tick_wraparound():
    r = Rig(clock_ms=TICKS_PERIOD - 400)
    r.open_session()
    r.setpoint(12.0, 1000)
    r.run(800)  # the tick counter wraps in here
    assert r.hal.ticks_ms() < 1000, "the test must cross the wrap"
    assert r.hal.enabled and 100 <= r.node.fs.remaining_ms(r.hal.ticks_ms()) <= 200
    r.run(250)
    assert r.node.mode == d.MODE_FAILSAFE
