"""The converter node: control step, protocol handling and periodic reports.

Data flows one way: `hal.sample()` -> `step()` (failsafe, derating, protection,
regulation, actuators) and, beside it, frames in -> `on_block()` (checks,
authentication, dispatch, acknowledgement) and `service()` -> telemetry,
heartbeats, events out. `step()` never allocates; the rest may.
"""

import os

from pfnode.auth import Session
from pfnode.clock import ticks_add, ticks_diff
from pfnode.config import Config
from pfnode.control import Controller, derated_limit_ma
from pfnode.failsafe import Failsafe
from pfnode.frame import Framer
from pfnode.ports import Ports
from pfnode.protection import Protection
from pfproto import defs as d
from pfproto.fields import check_body

FW_VERSION = "0.1.0"
_N_EVENTS = 8
_HELLO_PERIOD_MS = 1000
# Unkeyed sessions: a counter this far below the highest accepted is taken as the host's
# own, so one stray or forged frame cannot lock the host out (keyed sessions never do this)
_RESYNC_WINDOW = 16
# ms after a standby wake in which a repeat of that standby only renews the lease: a host
# renews every second, and one renewal may be on its way before the wake reaches it
_WAKE_GRACE_MS = 1500


def _f(milli):
    return milli / 1000.0


class Node:
    """One converter node. `link` has `write(buf, n)`; `hal` is a HAL backend."""

    def __init__(self, node_id, hal, link=None, ratings=None, key=None, control_period_ms=5):
        from pfnode.config import Ratings

        self.node_id = node_id
        self.hal = hal
        self.link = link
        self.ratings = ratings if ratings is not None else Ratings(ports=hal.nports)
        self.cfg = Config(self.ratings, control_period_ms)
        self.session = Session(key)
        self.framer = Framer()
        self.ctrl = Controller(self.cfg)
        self.prot = Protection(self.cfg)
        self.fs = Failsafe(self.cfg)
        self.ports = Ports(hal, self.cfg)
        self.boot_ms = hal.ticks_ms()
        self.boot_reason = hal.reset_cause()
        # commanded state
        self.cmd_mv = 0  # VOUT_COMMAND in force
        self.on = False  # the host wants the output on
        self.wake_mv = 0  # standby: off, but start when the bus stays under this (0: plain off)
        self.sag_steps = 0  # consecutive control steps the bus has been under wake_mv
        self.woke_mv = 0  # the wake level of the standby it last woke from (0: none)
        self.woke_at = 0  # ticks of that wake
        self.output_on = False  # the converter is running
        self.mode = d.MODE_OFF
        # events raised in step(), sent by service(): a preallocated ring
        self.ev_code = [0] * _N_EVENTS
        self.ev_faults = [0] * _N_EVENTS
        self.ev_value = [0] * _N_EVENTS
        self.ev_head = 0
        self.ev_tail = 0
        self.ev_dropped = 0
        # report timers
        now = self.boot_ms
        self.next_telemetry = now
        self.next_heartbeat = now
        self.next_hello = now
        # watchdog check-ins: fed only when both the control and comms paths ran
        self.ctrl_alive = False
        self.comms_alive = False
        self.accepted = 0  # frames that passed every check and were acted on
        self.rejects_at_clear = 0  # reject counters are cumulative; CML flags new ones
        hal.set_enable(False)
        hal.set_vref(0)
        self._push_event(d.EV_BOOT, 0, self.boot_reason)

    # ================================================================ control
    def _push_event(self, code, faults, value):
        i = self.ev_head
        nxt = (i + 1) % _N_EVENTS
        if nxt == self.ev_tail:
            self.ev_dropped += 1
            return
        self.ev_code[i] = code
        self.ev_faults[i] = faults
        self.ev_value[i] = value
        self.ev_head = nxt

    def _start(self, from_mv=0):
        self.ctrl.start(self.cmd_mv, from_mv)
        self.hal.set_vref(self.ctrl.target_mv)
        self.hal.set_enable(True)
        self.output_on = True

    def _stop(self):
        self.hal.set_enable(False)
        self.hal.set_vref(0)
        self.ctrl.reset()
        self.output_on = False

    def step(self):
        """One control period. Allocation-free: safe to call from a timer interrupt."""
        hal = self.hal
        cfg = self.cfg
        now = hal.ticks_ms()
        hal.sample()
        vout = hal.vout_mv
        iout = hal.iout_ma
        temp = hal.temp1_mc if hal.temp1_mc > hal.temp2_mc else hal.temp2_mc
        if self.fs.check(now):
            self._push_event(d.EV_FAILSAFE, d.FAULT_FAILSAFE, self.cmd_mv)
            self.wake_mv = 0  # the failsafe's policy decides now, not the host's standby
            self.sag_steps = 0
            if cfg.failsafe == d.FS_OFF:
                self.on = False
                self._stop()
            elif cfg.failsafe == d.FS_RAMP_DOWN:
                self.cmd_mv = 0
            elif cfg.failsafe == d.FS_REVERT and cfg.fs_vout_mv > 0:
                # the host is gone: run as a plain droop converter at VOUT_FAILSAFE (an off
                # converter comes on), so the rack is no worse than without one
                self.cmd_mv = cfg.fs_vout_mv
                self.on = True
                if not self.output_on and not self.prot.faults:
                    self._start()
        regulating = self.output_on and not self.ctrl.softstart and self.ctrl.mode == d.MODE_CV
        tripped = self.prot.check(now, vout, iout, temp, self.output_on, regulating)
        if tripped:
            if self.output_on:
                self._stop()
            self._push_event(d.EV_FAULT, tripped, 0)
        elif self.prot.faults:
            due = self.prot.due_retries(now, temp)
            if due and not self.prot.faults and self.on and not self.fs.latched:
                self._start()
                self._push_event(d.EV_RETRY, due, 0)
        elif self.wake_mv and not self.output_on and self.fs.lease_valid:
            # standby: the host switched this converter off at light load; load came back
            # faster than the host acts, so it starts on its own (SPEC §2, Standby)
            if vout < self.wake_mv:
                self.sag_steps += 1
                if self.sag_steps >= cfg.debounce:
                    self.on = True
                    self.woke_mv = self.wake_mv
                    self.woke_at = now
                    self.wake_mv = 0
                    self.sag_steps = 0
                    self._start(vout)  # into a live bus: from where it is, not from 0 V
                    self._push_event(d.EV_WAKE, 0, vout)
            else:
                self.sag_steps = 0
        if self.output_on:
            if self.fs.latched and self.cmd_mv == 0 and self.ctrl.target_mv == 0:
                self._stop()  # ramp-down failsafe finished
            else:
                ilim = derated_limit_ma(cfg, temp)
                hal.set_vref(self.ctrl.step(self.cmd_mv, vout, iout, ilim))
        self._update_mode()
        self.ctrl_alive = True

    def _update_mode(self):
        if self.prot.faults:
            self.mode = d.MODE_FAULT
        elif self.fs.latched:
            self.mode = d.MODE_FAILSAFE
        elif self.output_on:
            self.mode = self.ctrl.mode
        else:
            self.mode = d.MODE_OFF

    # ================================================================ status
    def status_word(self):
        faults = self.prot.faults
        warn = self.prot.warnings
        sw = 0
        if not self.output_on:
            sw |= d.SW_OFF
        if faults & d.FAULT_OV:
            sw |= d.SW_VOUT_OV
        if (faults | warn) & (d.FAULT_OV | d.FAULT_UV):
            sw |= d.SW_VOUT
        if faults & d.FAULT_OC:
            sw |= d.SW_IOUT_OC
        if (faults | warn) & d.FAULT_OC:
            sw |= d.SW_IOUT
        if (faults | warn) & d.FAULT_OT:
            sw |= d.SW_TEMPERATURE
        if self.hal.vin_mv < int(self.ratings.vin_min * 1000):
            sw |= d.SW_VIN_UV | d.SW_INPUT
        if self.fs.latched:
            sw |= d.SW_MFR
        if not (self.output_on and self.mode in (d.MODE_CV, d.MODE_CC)):
            sw |= d.SW_POWER_GOOD_N
        if sum(self.framer.rejects) > self.rejects_at_clear:
            sw |= d.SW_CML  # frames rejected since the last CLEAR_FAULTS
        return sw

    def fault_bits(self):
        return self.prot.faults | self.prot.latched | (d.FAULT_FAILSAFE if self.fs.latched else 0)

    # ================================================================ frames out
    def _send(self, msg_type, dst=d.ADDR_HOST):
        s = self.session
        mac = s.mac if (s.keyed and s.id) else None
        n = self.framer.build(msg_type, self.node_id, dst, s.id, s.next_tx_seq(), mac)
        if self.link is not None:
            self.link.write(self.framer.tx_wire, n)
        return n

    def send_body(self, msg_type, body, dst=d.ADDR_HOST):
        self.framer.begin().value(body)
        return self._send(msg_type, dst)

    def send_hello(self):
        r = self.ratings
        caps = d.CAP_DROOP | d.CAP_PORTS | d.CAP_HUMIDITY
        if self.session.keyed:
            caps |= d.CAP_AUTH
        return self.send_body(d.MSG_HELLO, {
            d.K_NODE_ID: self.node_id, d.K_FW_VERSION: FW_VERSION, d.K_BOARD: r.board,
            d.K_MFR_VOUT_MAX: r.vout_max, d.K_MFR_IOUT_MAX: r.iout_max,
            d.K_MFR_POUT_MAX: r.pout_max, d.K_MFR_VIN_MIN: r.vin_min, d.K_MFR_VIN_MAX: r.vin_max,
            d.K_CAPABILITIES: caps, d.K_PORTS: self.ports.n, d.K_UPTIME_MS: self.uptime_ms(),
            d.K_KEYED: self.session.keyed, d.K_BOOT_REASON: self.boot_reason,
        })

    def uptime_ms(self):
        return ticks_diff(self.hal.ticks_ms(), self.boot_ms) & 0xFFFFFFFF

    def send_telemetry(self):
        """Telemetry written key by key, in ascending key order, straight into the tx buffer."""
        hal = self.hal
        e = self.framer.begin()
        e.map(19)
        e.int(d.K_UPTIME_MS)
        e.int(self.uptime_ms())
        e.int(d.K_READ_VIN)
        e.float(_f(hal.vin_mv))
        e.int(d.K_READ_IIN)
        e.float(_f(hal.iin_ma))
        e.int(d.K_READ_VOUT)
        e.float(_f(hal.vout_mv))
        e.int(d.K_READ_IOUT)
        e.float(_f(hal.iout_ma))
        e.int(d.K_READ_POUT)
        e.float(_f(hal.vout_mv) * _f(hal.iout_ma))
        e.int(d.K_READ_TEMPERATURE_1)
        e.float(_f(hal.temp1_mc))
        e.int(d.K_READ_TEMPERATURE_2)
        e.float(_f(hal.temp2_mc))
        e.int(d.K_READ_TEMPERATURE_3)
        e.float(_f(hal.ambient_mc))
        e.int(d.K_READ_HUMIDITY)
        e.float(_f(hal.humidity_mpct))
        e.int(d.K_STATUS_WORD)
        e.int(self.status_word())
        e.int(d.K_IOUT_LIMIT)
        temp = hal.temp1_mc if hal.temp1_mc > hal.temp2_mc else hal.temp2_mc
        e.float(_f(derated_limit_ma(self.cfg, temp)))
        e.int(d.K_MODE)
        e.int(self.mode)
        e.int(d.K_REJECTS)
        e.array(d.N_REJ)
        for c in self.framer.rejects:
            e.int(c)
        e.int(d.K_PORT_STATE)
        e.int(self.ports.state)
        e.int(d.K_FAULTS)
        e.int(self.fault_bits())
        e.int(d.K_VOUT_COMMAND)
        e.float(_f(self.cmd_mv))
        e.int(d.K_WARNINGS)
        e.int(self.prot.warnings)
        e.int(d.K_LEASE_LEFT_MS)
        e.int(self.fs.remaining_ms(hal.ticks_ms()))
        return self._send(d.MSG_TELEMETRY)

    def send_heartbeat(self):
        return self.send_body(d.MSG_HEARTBEAT, {
            d.K_UPTIME_MS: self.uptime_ms(), d.K_STATUS_WORD: self.status_word(),
            d.K_MODE: self.mode, d.K_LEASE_LEFT_MS: self.fs.remaining_ms(self.hal.ticks_ms()),
        })

    def _ack(self, seq, result, reason=-1, field=-1, dst=d.ADDR_HOST):
        body = {d.K_ACK_SEQ: seq, d.K_RESULT: result}
        if reason >= 0:
            body[d.K_REASON] = reason
        if field >= 0:
            body[d.K_FIELD] = field
        return self.send_body(d.MSG_ACK, body, dst)

    # ================================================================ frames in
    def on_block(self, n):
        """Handle one received COBS block (in `framer.rx[:n]`). Never raises on bad input."""
        fr = self.framer
        f = fr.parse(n)
        if f is None:
            return
        if f.dst != self.node_id and f.dst != d.ADDR_BROADCAST:
            return
        rej = fr.rejects
        t = f.type
        if t not in d.TO_NODE:
            reason = d.REJ_DIRECTION if t in d.TO_HOST else d.REJ_UNKNOWN_MSG
            rej[reason] += 1
            self._ack(f.seq, d.RES_UNSUPPORTED, reason, -1, f.src)
            return
        s = self.session
        duplicate = False
        if t == d.MSG_SESSION_INIT:
            if s.keyed and not self._tag_ok(f, s.key_mac):
                return
        elif t != d.MSG_IDENTIFY:
            if f.session == 0 or f.session != s.id:
                rej[d.REJ_NO_SESSION] += 1
                if t in d.COMMANDS:
                    self._ack(f.seq, d.RES_AUTH, d.REJ_NO_SESSION, -1, f.src)
                return
            if s.keyed and not self._tag_ok(f, s.mac):
                return
            if f.seq <= s.last_seq:
                if t in d.COMMANDS and f.seq == s.last_cmd_seq:
                    duplicate = True
                elif not s.keyed and s.last_seq - f.seq > _RESYNC_WINDOW:
                    pass  # unkeyed: the higher counter was not the host's (SPEC.md §3)
                else:
                    rej[d.REJ_REPLAY] += 1
                    if t in d.COMMANDS:
                        self._ack(f.seq, d.RES_AUTH, d.REJ_REPLAY, -1, f.src)
                    return
        if not fr.decode_body(f):
            self._ack(f.seq, d.RES_MALFORMED, d.REJ_CBOR, -1, f.src)
            return
        reason, key = check_body(t, f.body)
        if reason:
            rej[reason] += 1
            res = d.RES_RANGE if reason == d.REJ_RANGE else d.RES_MALFORMED
            self._ack(f.seq, res, reason, key, f.src)
            return
        now = self.hal.ticks_ms()
        self.accepted += 1
        if duplicate:
            res, key = s.last_cmd_result
            self._ack(f.seq, res, -1, key, f.src)
            return
        if t == d.MSG_SESSION_INIT:
            self._session_init(f, now)
            return
        if t == d.MSG_IDENTIFY:
            self.send_hello()
            return
        s.last_seq = f.seq
        self.fs.heard_host(now)
        if t == d.MSG_HEARTBEAT:
            return
        res, key = self._command(t, f.body, now)
        self._update_mode()
        s.last_cmd_seq = f.seq
        s.last_cmd_result = (res, key)
        self._ack(f.seq, res, -1, key, f.src)

    def _tag_ok(self, f, mac):
        rej = self.framer.rejects
        if not f.tagged:
            rej[d.REJ_NO_TAG] += 1
        elif self.framer.check_tag(f, mac):
            return True
        if f.type in d.COMMANDS or f.type == d.MSG_SESSION_INIT:
            self._ack(f.seq, d.RES_AUTH, d.REJ_TAG if f.tagged else d.REJ_NO_TAG, -1, f.src)
        return False

    def _session_init(self, f, now):
        s = self.session
        sid = s.id
        while sid == s.id or sid == 0:
            r = os.urandom(2)
            sid = (r[0] << 8) | r[1]
        node_nonce = os.urandom(16)
        s.start(sid, f.body[d.K_NONCE], node_nonce)
        self.send_body(d.MSG_SESSION_ACCEPT, {
            d.K_NONCE: node_nonce, d.K_SESSION: sid, d.K_ACK_SEQ: f.seq}, f.src)
        self.fs.heard_host(now)
        self.next_telemetry = now

    def _command(self, t, body, now):
        """Apply a checked command; returns (RES_*, offending key or -1)."""
        if t == d.MSG_SETPOINT:
            return self._setpoint(body, now)
        if t == d.MSG_PORT_SWITCH:
            res = self.ports.request(body[d.K_PORT], body[d.K_CLOSE], self.hal.vout_mv,
                                     self.output_on)
            if res == d.RES_OK:
                self._push_event(d.EV_PORT, self.ports.state, body[d.K_PORT])
            return res, (d.K_PORT if res == d.RES_RANGE else -1)
        if t == d.MSG_CONFIG:
            return self.cfg.update(body)
        if t == d.MSG_CLEAR_FAULTS:
            self.prot.clear()
            was_latched = self.fs.latched
            self.fs.clear()
            if was_latched and self.output_on:
                # a held output keeps running on a grace lease; the host must renew it
                self.fs.grant(now, self.cfg.heartbeat_timeout_ms)
            self.rejects_at_clear = sum(self.framer.rejects)
            self._push_event(d.EV_FAULTS_CLEARED, 0, 0)
            return d.RES_OK, -1
        return d.RES_UNSUPPORTED, -1

    def _setpoint(self, body, now):
        cfg = self.cfg
        v = body[d.K_VOUT_COMMAND]
        mv = int(v * 1000.0 + 0.5)
        on = body.get(d.K_OPERATION, True)
        wake = int(body.get(d.K_VOUT_WAKE, 0.0) * 1000.0 + 0.5) if not on else 0
        if mv > cfg.vout_max_mv or mv > cfg.ov_warn_mv:
            return d.RES_RANGE, d.K_VOUT_COMMAND
        if on and mv < cfg.uv_fault_mv:
            return d.RES_RANGE, d.K_VOUT_COMMAND
        if wake and (mv <= cfg.uv_fault_mv or wake >= mv):
            # standby starts at VOUT_COMMAND when the bus falls under VOUT_WAKE
            return d.RES_RANGE, d.K_VOUT_WAKE
        if self.prot.latched or self.fs.latched:
            return d.RES_STATE, -1
        if (wake and wake == self.woke_mv and mv == self.cmd_mv and self.output_on
                and ticks_diff(now, self.woke_at) < _WAKE_GRACE_MS):
            # the host renewing the standby this node just woke from: sent before it heard
            # of the wake, so the lease is renewed and the output left running (SPEC, Standby)
            self.fs.grant(now, body[d.K_LEASE_MS])
            return d.RES_OK, -1
        self.woke_mv = 0
        self.cmd_mv = mv
        self.on = on and mv > 0
        self.wake_mv = wake
        self.sag_steps = 0
        self.fs.grant(now, body[d.K_LEASE_MS])
        if not self.on:
            if self.output_on:
                self._stop()
        elif not self.output_on and not self.prot.faults:
            self._start()
        return d.RES_OK, -1

    # ================================================================ periodic
    def service(self):
        """Send what is due: HELLO until a session exists, then telemetry, heartbeats, events."""
        now = self.hal.ticks_ms()
        if self.session.id == 0:
            if ticks_diff(now, self.next_hello) >= 0:
                self.send_hello()
                self.next_hello = ticks_add(now, _HELLO_PERIOD_MS)
        else:
            while self.ev_tail != self.ev_head:
                i = self.ev_tail
                self._send_event(i)
                self.ev_tail = (i + 1) % _N_EVENTS
            if ticks_diff(now, self.next_telemetry) >= 0:
                self.send_telemetry()
                self.next_telemetry = ticks_add(now, self.cfg.telemetry_period_ms)
            if ticks_diff(now, self.next_heartbeat) >= 0:
                self.send_heartbeat()
                self.next_heartbeat = ticks_add(now, self.cfg.heartbeat_timeout_ms // 4)
        self.comms_alive = True

    def _send_event(self, i):
        code = self.ev_code[i]
        body = {d.K_EVENT: code, d.K_UPTIME_MS: self.uptime_ms(),
                d.K_STATUS_WORD: self.status_word()}
        if code == d.EV_PORT:
            body[d.K_PORT] = self.ev_value[i]
        else:
            body[d.K_FAULTS] = self.ev_faults[i]
        if code == d.EV_FAULT:
            v = 0
            for p in range(d.N_PROT):
                if self.ev_faults[i] & (1 << p):
                    v = self.prot.value[p]
            body[d.K_VALUE] = _f(v)
        elif code == d.EV_WAKE:
            body[d.K_VALUE] = _f(self.ev_value[i])  # V: the bus it woke under
        self.send_body(d.MSG_EVENT, body)

    def feed_watchdog(self):
        """Feed the watchdog only if both the control and the comms path checked in."""
        if self.ctrl_alive and self.comms_alive:
            self.hal.wdt_feed()
            self.ctrl_alive = False
            self.comms_alive = False
            return True
        return False
