# Node firmware behaviour under the real MicroPython interpreter: commands over real frames: ports, configuration, authentication, telemetry.
# Run by tests/firmware/test_node.py with the heap capped; each case_* raises on failure.

from mp_helpers import Rig, near, result
from pfnode.auth import Hmac
from pfproto import defs as d


def case_port_interlock():
    r = Rig()
    r.open_session()
    r.setpoint(12.0, 60000)
    r.run(200)
    r.plant.port_far_v[0] = 5.0
    r.run(5)
    ack = r.send(d.MSG_PORT_SWITCH, {d.K_PORT: 0, d.K_CLOSE: True})
    assert result(ack) == d.RES_INTERLOCK and r.node.ports.state == 0
    assert not r.hal.ports_closed[0]
    r.plant.port_far_v[0] = 12.2
    r.run(5)
    assert result(r.send(d.MSG_PORT_SWITCH, {d.K_PORT: 0, d.K_CLOSE: True})) == d.RES_OK
    assert r.node.ports.state == 1 and r.hal.ports_closed[0]
    assert r.telemetry()[d.K_PORT_STATE] == 1
    assert result(r.send(d.MSG_PORT_SWITCH, {d.K_PORT: 0, d.K_CLOSE: False})) == d.RES_OK
    assert r.node.ports.state == 0
    ack = r.send(d.MSG_PORT_SWITCH, {d.K_PORT: 5, d.K_CLOSE: True})  # the node has 2 ports
    assert result(ack) == d.RES_RANGE and ack[d.K_FIELD] == d.K_PORT


def case_config_is_atomic():
    r = Rig()
    r.open_session()
    before = dict(r.node.cfg.si)
    warn = r.node.cfg.ot_warn_mc
    # both fields in range, but the warning limit above the fault limit
    ack = r.config(OT_WARN_LIMIT=90.0, OT_FAULT_LIMIT=80.0, TELEMETRY_PERIOD_MS=100)
    assert result(ack) == d.RES_RANGE and ack[d.K_FIELD] == d.K_OT_WARN_LIMIT, ack
    # one good field, one outside the protocol's range
    ack = r.config(TELEMETRY_PERIOD_MS=100, VOUT_DROOP=2.0)
    assert result(ack) == d.RES_RANGE and ack[d.K_FIELD] == d.K_VOUT_DROOP, ack
    assert r.node.cfg.si == before and r.node.cfg.ot_warn_mc == warn
    assert r.node.cfg.telemetry_period_ms == 1000
    assert result(r.config(TELEMETRY_PERIOD_MS=100)) == d.RES_OK
    assert r.node.cfg.telemetry_period_ms == 100


def case_setpoint_outside_rating_refused():
    r = Rig()
    r.open_session()
    r.setpoint(12.0, 60000)
    ack = r.setpoint(14.9)  # protocol allows 60 V, this node is rated 14 V
    assert result(ack) == d.RES_RANGE and ack[d.K_FIELD] == d.K_VOUT_COMMAND
    assert r.node.cmd_mv == 12000


def case_duplicates_reacknowledged_replays_refused():
    r = Rig()
    r.open_session()
    close = r.frame(d.MSG_PORT_SWITCH, {d.K_PORT: 1, d.K_CLOSE: True})
    open_ = r.frame(d.MSG_PORT_SWITCH, {d.K_PORT: 1, d.K_CLOSE: False})
    assert result(r.deliver(close)[-1]) == d.RES_OK and r.node.ports.state == 2
    assert result(r.deliver(open_)[-1]) == d.RES_OK and r.node.ports.state == 0
    # the host retries the last command: acknowledged again, applied once
    ack = r.deliver(open_)[-1]
    assert result(ack) == d.RES_OK and r.node.ports.state == 0
    # an older command comes back: a replay
    ack = r.deliver(close)[-1]
    assert result(ack) == d.RES_AUTH and ack[d.K_REASON] == d.REJ_REPLAY
    assert r.node.ports.state == 0
    assert r.node.framer.rejects[d.REJ_REPLAY] == 1


def case_keyed_node_requires_tags_and_fresh_counters():
    r = Rig(keyed=True)
    # SESSION_INIT without the provisioned key's tag gets no session
    acks = r.deliver(r.frame(d.MSG_SESSION_INIT, {d.K_NONCE: bytes(16)}, session=0, mac=None))
    assert result(acks[-1]) == d.RES_AUTH and r.node.session.id == 0
    r.open_session()
    assert result(r.setpoint(12.0, 60000)) == d.RES_OK
    ack = r.send(d.MSG_SETPOINT, {d.K_VOUT_COMMAND: 5.0, d.K_LEASE_MS: 3000}, mac=None)
    assert result(ack) == d.RES_AUTH and ack[d.K_REASON] == d.REJ_NO_TAG
    ack = r.send(d.MSG_SETPOINT, {d.K_VOUT_COMMAND: 5.0, d.K_LEASE_MS: 3000},
                 mac=Hmac(bytes(32)))
    assert result(ack) == d.RES_AUTH and ack[d.K_REASON] == d.REJ_TAG
    assert r.node.cmd_mv == 12000
    # frames the node sends in a keyed session verify with the session key
    r.run(1100)
    assert r.link.of_type(d.MSG_TELEMETRY), "no telemetry in a keyed session"
    assert r.node.framer.rejects[d.REJ_TAG] == 1 and r.node.framer.rejects[d.REJ_NO_TAG] >= 1


def case_telemetry_reports_state():
    r = Rig()
    r.open_session()
    r.setpoint(12.0, 60000)
    r.run(1200)
    t = r.link.of_type(d.MSG_TELEMETRY)[-1]
    assert near(t[d.K_READ_VOUT], 12.0, 0.015) and near(t[d.K_READ_IOUT], 6.0, 0.05)
    assert near(t[d.K_READ_POUT], t[d.K_READ_VOUT] * t[d.K_READ_IOUT], 0.1)
    assert t[d.K_MODE] == d.MODE_CV and t[d.K_VOUT_COMMAND] == 12.0
    assert t[d.K_STATUS_WORD] & (d.SW_OFF | d.SW_POWER_GOOD_N) == 0
    assert len(t[d.K_REJECTS]) == d.N_REJ and 2000 < t[d.K_LEASE_LEFT_MS] <= 60000
    assert t[d.K_READ_TEMPERATURE_3] == 25.0 and t[d.K_READ_HUMIDITY] == 40.0
    ack = r.send(d.MSG_IDENTIFY, {}, session=0)
    assert ack is None and r.link.of_type(d.MSG_HELLO), "IDENTIFY must bring a HELLO"


def case_unkeyed_counter_resyncs_after_one_forged_frame():
    r = Rig()
    r.open_session()
    assert result(r.setpoint(12.0, 60000)) == d.RES_OK
    # one frame with a huge counter (a stray or forged frame that passed the CRC)
    forged = r.frame(d.MSG_PORT_SWITCH, {d.K_PORT: 1, d.K_CLOSE: True}, seq=2000000000)
    assert result(r.deliver(forged)[-1]) == d.RES_OK
    # the host's next genuine command, far below: taken, not refused as a replay
    ack = r.send(d.MSG_PORT_SWITCH, {d.K_PORT: 1, d.K_CLOSE: False})
    assert result(ack) == d.RES_OK and r.node.ports.state == 0
    assert r.node.framer.rejects[d.REJ_REPLAY] == 0
    # within the window below the highest, still a replay
    ack = r.send(d.MSG_PORT_SWITCH, {d.K_PORT: 1, d.K_CLOSE: True}, seq=r.seq - 2)
    assert result(ack) == d.RES_AUTH and ack[d.K_REASON] == d.REJ_REPLAY


def case_keyed_counter_never_resyncs():
    r = Rig(keyed=True)
    r.open_session()
    assert result(r.setpoint(12.0, 60000)) == d.RES_OK
    high = r.frame(d.MSG_PORT_SWITCH, {d.K_PORT: 1, d.K_CLOSE: True}, seq=1000)
    assert result(r.deliver(high)[-1]) == d.RES_OK
    ack = r.send(d.MSG_PORT_SWITCH, {d.K_PORT: 1, d.K_CLOSE: False}, seq=5)
    assert result(ack) == d.RES_AUTH and ack[d.K_REASON] == d.REJ_REPLAY
