"""Fast mode: the whole emulated rack in one CPython process on a virtual clock.

The node firmware modules (`pfnode`, installed alongside the host) are imported under CPython and run
exactly as on the MicroPython processes of full-process mode, against the same
`RackPhysics`, but time is a counter: each period the nodes sample, step and
report, then the physics advances, as fast as the machine allows. The host talks
to the nodes in real frames (host codec in, node codec out), so everything but
the transports and the interpreter is the same as in full-process mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pfproto import defs as d
from powerflow.emulator.physics import RackPhysics
from powerflow.emulator.ptybridge import LinkFaults
from powerflow.protocol.codec import Frame, StreamDecoder, encode_frame
from powerflow.model.rack import Rack
from powerflow.nodeconfig import HOST_HEARTBEAT_MS
from pfnode.clock import TICKS_PERIOD
from pfnode.config import Ratings
from pfnode.node import Node


def _milli(x: float) -> int:
    return int(x * 1000.0 + (0.5 if x >= 0 else -0.5))


class PhysicsHal:
    """A firmware HAL whose hardware is the rack physics, read and written in-process."""

    def __init__(self, rack: FastRack, node_id: int, nports: int) -> None:
        self.rack = rack
        self.node_id = node_id
        self.nports = nports
        self.vref_mv = 0
        self.enabled = False
        self.ports_closed = [False] * nports
        self.vin_mv = self.iin_ma = self.vout_mv = self.iout_ma = 0
        self.temp1_mc = self.temp2_mc = self.ambient_mc = self.humidity_mpct = 0
        self._port = [0] * 8
        self.wdt_feeds = 0

    def ticks_ms(self) -> int:
        return self.rack.now_ms % TICKS_PERIOD

    def background(self) -> None:
        ph = self.rack.physics
        mask = sum(1 << i for i in range(self.nports) if self.ports_closed[i])
        ph.set_actuators(self.node_id, self.vref_mv / 1000.0, self.enabled, mask)
        r = ph.readings(self.node_id)
        self.vin_mv, self.iin_ma = _milli(r["vin"]), _milli(r["iin"])
        self.vout_mv, self.iout_ma = _milli(r["vout"]), _milli(r["iout"])
        self.temp1_mc, self.temp2_mc = _milli(r["temp1"]), _milli(r["temp2"])
        self.ambient_mc, self.humidity_mpct = _milli(r["ambient"]), _milli(r["humidity"])
        self._port = [_milli(v) for v in ph.port_voltages(self.node_id)]

    def sample(self) -> None:
        pass

    def port_mv(self, port: int) -> int:
        return self._port[port]

    def set_vref(self, mv: int) -> None:
        self.vref_mv = mv

    def set_enable(self, on: bool) -> None:
        self.enabled = on

    def set_port(self, port: int, closed: bool) -> None:
        self.ports_closed[port] = closed

    def wdt_start(self, timeout_ms: int) -> None:
        pass

    def wdt_feed(self) -> None:
        self.wdt_feeds += 1

    def reset_cause(self) -> int:
        return d.BOOT_POWER_ON


class _Wire:
    """Node -> host bytes, decoded by the host codec as they are written."""

    def __init__(self) -> None:
        self.decoder = StreamDecoder()
        self.frames: list[Frame] = []

    def write(self, buf: Any, n: int) -> None:
        for item in self.decoder.feed(bytes(buf[:n])):
            if isinstance(item, Frame):
                self.frames.append(item)


class FastRack:
    def __init__(self, rack: Rack, seed: int = 0, control_period_ms: int = 5) -> None:
        if any(n.key for n in rack.nodes):
            raise ValueError("fast mode runs unkeyed nodes; remove the keys from the rack file")
        self.rack = rack
        self.physics = RackPhysics(rack, seed)
        self.period = control_period_ms
        self.now_ms = 0
        self.nodes: dict[int, Node] = {}
        self.wires: dict[int, _Wire] = {}
        self.sessions: dict[int, int] = {}
        self.seq: dict[int, int] = {}
        self.telemetry: dict[int, dict[int, Any]] = {}
        self.telemetry_ms: dict[int, int] = {}  # when each node's last telemetry arrived
        self.cut: set[int] = set()  # nodes whose link is down (fault injection)
        self.events: list[tuple[int, int, dict[int, Any]]] = []  # (t ms, node, body)
        for n in rack.nodes:
            nports = max([b.port[1] + 1 for b in rack.branches if b.port and b.port[0] == n.id],
                         default=0)
            hal = PhysicsHal(self, n.id, nports)
            wire = _Wire()
            ratings = Ratings(n.vout_max, n.iout_max, n.rating_w, ports=nports, board="fast")
            self.nodes[n.id] = Node(n.id, hal, wire, ratings, None, control_period_ms)
            self.wires[n.id] = wire
            self.seq[n.id] = 0
        self._next_hb = 0

    # ---- the host's side of the frames -------------------------------------------------
    def _frames_from(self, nid: int) -> list[Frame]:
        w = self.wires[nid]
        out, w.frames = w.frames, []
        if nid in self.cut:
            return []
        for f in out:
            if f.type == d.MSG_TELEMETRY:
                self.telemetry_ms[nid] = self.now_ms
                self.telemetry[nid] = f.body
            elif f.type == d.MSG_EVENT:
                self.events.append((self.now_ms, nid, f.body))
        return out

    def send(self, nid: int, msg_type: int, body: dict[int, Any], session: int | None = None
             ) -> dict[int, Any] | None:
        """Deliver one host frame to node `nid`; returns its ACK body (commands) or None."""
        if nid in self.cut:
            return None
        self.seq[nid] += 1
        seq = self.seq[nid]
        sid = self.sessions.get(nid, 0) if session is None else session
        wire = encode_frame(msg_type, d.ADDR_HOST, nid, sid, seq, body)
        node = self.nodes[nid]
        node.framer.feed(wire, len(wire), node.on_block)
        ack = None
        for f in self._frames_from(nid):
            if f.type == d.MSG_ACK and f.body[d.K_ACK_SEQ] == seq:
                ack = f.body
            elif f.type == d.MSG_SESSION_ACCEPT:
                self.sessions[nid] = f.body[d.K_SESSION]
                self.seq[nid] = 0
        return ack

    def open_sessions(self) -> None:
        for nid in self.nodes:
            self.send(nid, d.MSG_SESSION_INIT, {d.K_NONCE: bytes(16)}, session=0)
            if nid not in self.sessions:
                raise RuntimeError(f"node {nid} did not accept a session")

    def command(self, nid: int, msg_type: int, body: dict[int, Any]) -> dict[int, Any]:
        ack = self.send(nid, msg_type, body)
        if ack is None or ack[d.K_RESULT] != d.RES_OK:
            raise RuntimeError(f"node {nid} refused {msg_type:#x}: {ack}")
        return ack

    # ---- faults (the kinds fast mode has: see emulator/faults.py) ------------------------
    def fail_converter(self, node_id: int, failed: bool = True) -> None:
        self.physics.conv[node_id].failed = failed

    def link_faults(self, node_id: int, faults: LinkFaults) -> None:
        """Fast mode delivers frames whole or not at all: a cut, or none."""
        if faults.bit_error_rate or faults.drop_rate:
            raise ValueError("link-noise: fast mode has no byte-level link (use --emulate)")
        if faults.cut:
            self.cut.add(node_id)
        else:
            self.cut.discard(node_id)

    def set_ambient(self, celsius: float) -> None:
        self.physics.ambient_c = celsius

    def load_spike(self, device: str, extra_w: float, seconds: float) -> None:
        k = next(i for i, dv in enumerate(self.rack.devices) if dv.id == device)
        self.physics.dev_extra[k] = extra_w
        self.physics.dev_extra_until[k] = self.physics.t + seconds

    def set_load_scale(self, scale: float) -> None:
        self.physics.load_scale = scale

    def _not_here(self, what: str) -> None:
        raise ValueError(f"{what}: not in fast mode (processes and sensors are emulated only "
                         "with --emulate)")

    def sensor_fault(self, node_id: int, sensor: str, stuck: float | None = None,
                     drift_per_s: float = 0.0) -> None:
        self._not_here("sensor faults")

    def restart_node(self, node_id: int) -> None:
        self._not_here("node-reboot")

    def kill_node(self, node_id: int) -> None:
        self._not_here("node-kill")

    def pause_node(self, node_id: int, seconds: float) -> None:
        self._not_here("node-pause")

    # ---- time ----------------------------------------------------------------------------
    def run(self, seconds: float, host_heartbeat_ms: int = HOST_HEARTBEAT_MS,
            on_step: Callable[[float], None] | None = None) -> None:
        """Advance the rack `seconds` of virtual time; the host heartbeats every node.
        `on_step(dt)` is called after each physics step (for measurements)."""
        end = self.now_ms + int(seconds * 1000)
        while self.now_ms < end:
            self.now_ms += self.period
            for nid, node in self.nodes.items():
                node.hal.background()
                node.step()
                node.service()
                node.feed_watchdog()
                self._frames_from(nid)
            self.physics.step(self.period / 1000.0)
            if on_step is not None:
                on_step(self.period / 1000.0)
            if self.sessions and self.now_ms >= self._next_hb:
                for nid in self.sessions:
                    self.send(nid, d.MSG_HEARTBEAT, {d.K_UPTIME_MS: self.now_ms})
                self._next_hb = self.now_ms + host_heartbeat_ms
