# Node firmware behaviour under the real MicroPython interpreter: protections and their responses (over-temperature, over-current, over- and under-voltage).
# Run by tests/firmware/test_node.py with the heap capped; each case_* raises on failure.

from mp_helpers import Rig, near, result
from pfproto import defs as d


def case_over_temperature_trips_and_stays_latched_until_clear():
    r = Rig()
    r.open_session()
    assert result(r.send(d.MSG_CONFIG, {d.K_FAULT_RESPONSE: {d.PROT_OT: [d.RESP_LATCH, 0, 0]}})) == 0
    r.setpoint(12.0, 60000)
    r.run(200)
    r.plant.stuck_temp = 120.0
    steps = 0
    while r.hal.enabled and steps < 20:
        r.run(5)
        steps += 1
    assert steps == r.node.cfg.debounce, steps  # trips on the debounce-th sample over the limit
    assert r.node.mode == d.MODE_FAULT and r.node.prot.latched & d.FAULT_OT
    faults = [e[d.K_FAULTS] for e in r.link.of_type(d.MSG_EVENT) if e[d.K_EVENT] == d.EV_FAULT]
    assert faults == [d.FAULT_OT], faults
    r.plant.stuck_temp = 30.0
    r.run(3000)
    assert not r.hal.enabled, "a latched fault must not clear itself"
    assert result(r.setpoint(12.0)) == d.RES_STATE
    assert result(r.send(d.MSG_CLEAR_FAULTS, {})) == d.RES_OK
    assert not r.hal.enabled and r.node.mode == d.MODE_OFF
    assert result(r.setpoint(12.0, 60000)) == d.RES_OK
    r.run(200)
    assert near(r.hal.vout_mv, 12000, 15)


def case_over_temperature_retry_waits_for_cooling():
    r = Rig()
    r.open_session()
    r.setpoint(12.0, 60000)
    r.run(200)
    r.plant.stuck_temp = 120.0
    r.run(50)
    assert not r.hal.enabled
    r.plant.stuck_temp = 105.0  # below the fault limit, above the warning limit
    r.link.clear()  # the frames of before are not looked at: the heap cap is the node's
    r.run(6000)
    assert not r.hal.enabled, "restarted while still hot"
    r.plant.stuck_temp = 60.0
    r.run(300)
    assert r.hal.enabled and near(r.hal.vout_mv, 12000, 15)
    evs = [e[d.K_EVENT] for e in r.link.of_type(d.MSG_EVENT)]
    assert d.EV_RETRY in evs, evs


def case_over_current_retries_then_latches():
    r = Rig()
    r.open_session()
    body = {d.K_IOUT_OC_WARN_LIMIT: 20.0, d.K_IOUT_OC_FAULT_LIMIT: 25.0,
            d.K_FAULT_RESPONSE: {d.PROT_OC: [d.RESP_RETRY, 2, 100]}}
    assert result(r.send(d.MSG_CONFIG, body)) == d.RES_OK
    r.plant.load_ohm = 0.3  # 40 A: under the current limit, over the OC fault limit
    r.setpoint(12.0, 60000)
    retries = 0
    trips = 0
    for _ in range(200):
        r.link.clear()
        r.run(5)
        for e in r.link.of_type(d.MSG_EVENT):
            if e[d.K_EVENT] == d.EV_RETRY:
                retries += 1
            if e[d.K_EVENT] == d.EV_FAULT:
                trips += 1
                assert e[d.K_FAULTS] == d.FAULT_OC and e[d.K_VALUE] > 25.0
    assert retries == 2 and trips == 3, (retries, trips)
    assert r.node.prot.latched & d.FAULT_OC and not r.hal.enabled
    assert r.node.status_word() & d.SW_IOUT_OC


def case_over_voltage_trips_on_sensor_reading():
    r = Rig()
    r.open_session()
    r.setpoint(12.0, 60000)
    r.run(200)
    r.plant.stuck_vout = 16.0
    r.run(5 * r.node.cfg.debounce)
    assert not r.hal.enabled and r.node.prot.latched & d.FAULT_OV
    sw = r.telemetry()[d.K_STATUS_WORD]
    assert sw & d.SW_VOUT_OV and sw & d.SW_OFF and sw & d.SW_POWER_GOOD_N, hex(sw)


def case_under_voltage_ignored_during_softstart_then_trips():
    r = Rig()
    r.open_session()
    assert result(r.config(VOUT_UV_FAULT_LIMIT=10.5, VOUT_UV_WARN_LIMIT=11.0)) == d.RES_OK
    r.setpoint(12.0, 60000)
    r.run(300)
    assert r.node.prot.faults == 0 and r.hal.enabled
    r.plant.stuck_vout = 9.0
    r.run(5 * r.node.cfg.debounce + 5)
    assert not r.hal.enabled and r.node.prot.faults & d.FAULT_UV
