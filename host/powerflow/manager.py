"""The host's node manager: one task per node of the rack.

For each node: connect (reconnecting with backoff; a link that cannot open puts the node in
`link-error` with the OS's reason, said once as an event), discover it by its HELLO,
open a session, configure it, then heartbeat, renew its setpoint lease and
collect its telemetry into the store. A node silent for LOST_AFTER_S is
declared lost and the task starts over, which also rediscovers a node that
rebooted. Commands go through `NodeSession.command` (acknowledged, retried
with the same counter); out-of-limit values are refused before anything is sent.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pfproto import defs as d
from pfproto.names import EV_NAMES, MODE_NAMES
from powerflow.link.session import CommandError, NodeSession
from powerflow.link.transport import LinkAddress, open_link
from powerflow.nodeconfig import (HEARTBEAT_TIMEOUT_MS, HOST_HEARTBEAT_MS, LEASE_MS,
                                  LEASE_RENEW_S, off_body, session_config)
from powerflow.protocol.codec import round_f32
from powerflow.protocol.names import body_to_names
from powerflow.model.rack import Node, Rack
from powerflow.store import TelemetryStore

LOST_AFTER_S = 2.0  # four of the node's heartbeat periods without a frame
HOST_GAP_S = 0.5  # a node task that did not run for this long: the host itself was away
HOST_HEARTBEAT_S = HOST_HEARTBEAT_MS / 1000.0
TELEMETRY_MS = 500
STORED = ("READ_VIN", "READ_IIN", "READ_VOUT", "READ_IOUT", "READ_POUT", "READ_TEMPERATURE_1",
          "READ_TEMPERATURE_2", "READ_TEMPERATURE_3", "READ_HUMIDITY", "IOUT_LIMIT", "STATUS_WORD",
          "MODE", "FAULTS", "VOUT_COMMAND")


OPEN_TIMEOUT_S = 3.0  # s, opening a link (a TCP connect that hangs counts as failed)
OPEN_BACKOFF_MAX_S = 5.0  # s, the longest wait between two tries at opening a link


_RUNNING = (d.MODE_SOFTSTART, d.MODE_CV, d.MODE_CC)


def _held_body(ns: NodeState) -> dict[int, Any]:
    """The SETPOINT body that renews what the host holds a node to now."""
    if ns.vout is not None:
        return {d.K_VOUT_COMMAND: ns.vout, d.K_LEASE_MS: LEASE_MS}
    return off_body(LEASE_MS, ns.standby)


def link_error_text(e: BaseException) -> str:
    """Why a link did not open, in the OS's words: `[Errno 2] No such file or directory`
    for a serial device that is not there, `Connection refused` for a TCP port, ..."""
    if isinstance(e, TimeoutError):
        return f"no answer within {OPEN_TIMEOUT_S:g} s"
    if isinstance(e, OSError) and e.errno:
        return f"{os.strerror(e.errno)} ({errno.errorcode.get(e.errno, e.errno)})"
    return str(e) or type(e).__name__


class NodeUnavailable(Exception):
    """The node is not online, or not part of this rack."""


@dataclass
class NodeState:
    node: Node
    address: LinkAddress
    state: str = "connecting"  # connecting | online | lost | link-error
    link_error: str | None = None  # why the link last failed to open (the OS's words)
    hello: dict[str, Any] = field(default_factory=dict)
    telemetry: dict[str, Any] = field(default_factory=dict)
    last_rx: float = 0.0  # monotonic, any frame
    telemetry_t: float = 0.0  # monotonic, when `telemetry` arrived
    failsafe_cleared_t: float = 0.0  # monotonic, when this host last cleared a failsafe latch
    lost_count: int = 0
    vout: float | None = None  # desired VOUT_COMMAND, renewed as a lease; None = off
    off_leased: bool = False  # off by the host's choice: the off state is leased too
    # off in standby (with off_leased): (V it starts at, V the bus must fall under)
    standby: tuple[float, float] | None = None
    woke_t: float = 0.0  # monotonic: when it last started on its own (0: not since taken over)
    standby_t: float = 0.0  # monotonic: when the node acknowledged its standby
    ports: dict[int, bool] = field(default_factory=dict)  # desired port states
    session: NodeSession | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)  # frames the host dropped, by reason
    # why the node last refused its setpoint (None: accepted): a node with a latched fault
    # refuses every lease renewal, and one event says so, not one a second
    setpoint_refused: str | None = None
    # READ_VOUT of each telemetry frame with its arrival (monotonic s, V): the control loop's
    # supervisor looks at every sample, not only the latest, so a short sag between two of
    # its ticks (or while the host was starved of CPU) is still seen and reported
    vout_samples: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=32))

    @property
    def vout_max(self) -> float:
        """The highest output voltage the node may be set to (V): the rack file's rating,
        and never above what the node itself reports (a HELLO cannot raise it)."""
        rated = self.hello.get("MFR_VOUT_MAX")
        if isinstance(rated, int | float) and not isinstance(rated, bool):
            return min(self.node.vout_max, float(rated))
        return self.node.vout_max

    def summary(self) -> dict[str, Any]:
        t = self.telemetry
        return {
            "id": self.node.id, "state": self.state, "link": str(self.address),
            "segment": self.node.segment, "mode": MODE_NAMES.get(t.get("MODE", -1), "unknown"),
            "vout": t.get("READ_VOUT"), "iout": t.get("READ_IOUT"), "pout": t.get("READ_POUT"),
            "temperature": t.get("READ_TEMPERATURE_1"), "ambient": t.get("READ_TEMPERATURE_3"),
            "humidity": t.get("READ_HUMIDITY"), "iout_limit": t.get("IOUT_LIMIT"),
            "vout_command": t.get("VOUT_COMMAND"), "status_word": t.get("STATUS_WORD"),
            "faults": t.get("FAULTS"), "warnings": t.get("WARNINGS"),
            "port_state": t.get("PORT_STATE"), "lease_left_ms": t.get("LEASE_LEFT_MS"),
            "rejects": sum(t.get("REJECTS", [])), "lost_count": self.lost_count,
            "firmware": self.hello.get("FW_VERSION"), "vout_max": self.vout_max,
            "host_refused": dict(self.refused), "link_error": self.link_error,
            "telemetry_age_s": (round(time.monotonic() - self.telemetry_t, 3)
                                if self.telemetry_t else None),
        }


class NodeManager:
    def __init__(self, rack: Rack, addresses: dict[int, LinkAddress], store: TelemetryStore,
                 match_droop: bool = True, telemetry_ms: int = TELEMETRY_MS) -> None:
        self.rack = rack
        self.telemetry_ms = telemetry_ms
        self.store = store
        self.match_droop = match_droop  # set each node's droop to its converter's own
        self.nodes = {n.id: NodeState(n, addresses[n.id]) for n in rack.nodes}
        self._tasks: list[asyncio.Task[None]] = []
        self.started = time.time()
        # called with each node event as it happens (the console shows link errors with it)
        self.on_event: Callable[[dict[str, Any]], None] | None = None

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(ns), name=f"node {i}")
                       for i, ns in self.nodes.items()]
        self._tasks.append(loop.create_task(self._flusher(), name="store"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for ns in self.nodes.values():
            if ns.session is not None:
                await ns.session.close()
        self.store.flush()

    async def _flusher(self) -> None:
        last_maint = time.monotonic()
        while True:
            await asyncio.sleep(0.2)
            await asyncio.to_thread(self.store.flush)
            if time.monotonic() - last_maint > 60:
                last_maint = time.monotonic()
                await asyncio.to_thread(self.store.maintain)

    # ---- one node ----------------------------------------------------------------------
    async def _run(self, ns: NodeState) -> None:
        backoff = 0.1
        key = bytes.fromhex(ns.node.key) if ns.node.key else None
        while True:
            if ns.state != "link-error":
                ns.state = "connecting" if ns.state != "lost" else "lost"
            try:
                reader, writer = await asyncio.wait_for(open_link(ns.address), OPEN_TIMEOUT_S)
            except Exception as e:  # serial errors are not OSError; the task must go on
                why = link_error_text(e)
                if why != ns.link_error:  # said once per distinct cause, not every retry
                    self._event(ns, "link-error", f"{ns.address}: {why}")
                ns.state, ns.link_error = "link-error", why
                await asyncio.sleep(backoff)
                backoff = min(OPEN_BACKOFF_MAX_S, backoff * 2)
                continue
            if ns.link_error is not None:
                self._event(ns, "link", f"{ns.address}: opened")
                ns.link_error = None
            ns.state = "connecting" if ns.state == "link-error" else ns.state
            session = NodeSession(reader, writer, key=key, node_id=ns.node.id,
                                  refused=ns.refused)
            ns.session = session
            try:
                await self._serve(ns, session)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a node's task must outlive anything its link does
                self._event(ns, "link", f"{type(e).__name__}: {e}")
            finally:
                ns.session = None
                await session.close()
            if ns.state == "online":
                ns.state = "lost"
                ns.lost_count += 1
                self._event(ns, "lost", "no frame for %.1f s" % LOST_AFTER_S)
            await asyncio.sleep(backoff)
            backoff = min(2.0, backoff * 2)

    async def _serve(self, ns: NodeState, s: NodeSession) -> None:
        await s.wait_hello(timeout=3.0)
        await s.open_session()
        # identity and ratings as the node says them inside the session (authenticated
        # when keyed), not as the untagged HELLO before it did
        ns.hello = body_to_names(await s.confirm_identity())
        await s.command(d.MSG_CONFIG, session_config(ns.node, self.rack.bus_voltage,
                                                     self.telemetry_ms, HEARTBEAT_TIMEOUT_MS,
                                                     self.match_droop))
        pending = dict(ns.ports)  # the desired port states, applied below and retried
        ns.state = "online"
        ns.last_rx = time.monotonic()
        self._event(ns, "online", f"firmware {ns.hello.get('FW_VERSION')}")
        next_hb = next_lease = 0.0
        loop = asyncio.get_running_loop()
        prev = awake = loop.time()
        while True:
            now = loop.time()
            if now - prev > HOST_GAP_S:
                # this host was not running (paused, starved): the node's silence is counted
                # from when it runs again, so its own absence is not taken for the node's
                awake = now
            prev = now
            while not s.inbox.empty():
                self._received(ns, s.inbox.get_nowait())
            if now - max(ns.last_rx, awake) > LOST_AFTER_S:
                return
            if now >= next_hb:
                s.heartbeat(int((time.time() - self.started) * 1000))
                next_hb = now + HOST_HEARTBEAT_S
            if now >= next_lease:
                faults = ns.telemetry.get("FAULTS")
                if faults == d.FAULT_FAILSAFE and ns.telemetry_t > ns.failsafe_cleared_t:
                    # latched only because this host was away: being back, it clears that latch
                    # (protection faults are left for the operator); once per fresh report
                    await s.command(d.MSG_CLEAR_FAULTS, {})
                    ns.failsafe_cleared_t = loop.time()
                    if ns.telemetry.get("MODE") == d.MODE_FAILSAFE and (
                            ns.vout is not None or ns.off_leased):
                        # take over from where the node is (on at its failsafe voltage), not
                        # from the setpoint of before: the control loop moves it from there,
                        # all nodes together, once none is left in failsafe
                        ns.vout, ns.off_leased = (ns.node.safe_vout(self.rack.bus_voltage, self.match_droop),
                                                 False)
                        ns.standby = None
                    self._event(ns, "failsafe cleared", "the host is back")
                if ns.vout is not None or ns.off_leased:
                    try:
                        # a command in flight (set_output) holds the session: renew what is
                        # wanted once the renewal has gone, if that changed while it waited
                        for _ in range(2):
                            body = _held_body(ns)
                            await s.command(d.MSG_SETPOINT, body)
                            if _held_body(ns) == body:
                                break
                    except CommandError as e:
                        if e.result is None:
                            raise  # no answer: the link is in trouble
                        if ns.setpoint_refused != str(e):  # e.g. a latched fault
                            self._event(ns, "setpoint refused",
                                        f"{e} (until it is accepted again)")
                        ns.setpoint_refused = str(e)
                    else:
                        if ns.setpoint_refused is not None:
                            self._event(ns, "setpoint accepted", "after refusals")
                        ns.setpoint_refused = None
                for port, close in list(pending.items()):
                    try:
                        await s.command(d.MSG_PORT_SWITCH, {d.K_PORT: port, d.K_CLOSE: close})
                        del pending[port]
                    except CommandError as e:  # interlock: the two sides still differ
                        if e.result != d.RES_INTERLOCK:
                            raise
                next_lease = now + LEASE_RENEW_S
            try:
                rx = await asyncio.wait_for(s.inbox.get(), 0.1)
            except TimeoutError:
                continue
            self._received(ns, rx)

    def _received(self, ns: NodeState, rx: Any) -> None:
        ns.last_rx = rx.t
        f = rx.frame
        if f.type == d.MSG_TELEMETRY:
            named = body_to_names(f.body)
            ns.telemetry = named
            ns.telemetry_t = rx.t
            v = named.get("READ_VOUT")
            if isinstance(v, int | float) and not isinstance(v, bool):
                ns.vout_samples.append((rx.t, float(v)))
            self.store.add(ns.node.id, time.time(), {k: named[k] for k in STORED if k in named})
            if (ns.standby is not None and named.get("MODE") in _RUNNING
                    and rx.t > ns.standby_t):
                self._woke(ns)  # its WAKE event lost: telemetry sent since says it runs
        elif f.type == d.MSG_EVENT:
            if f.body[d.K_EVENT] == d.EV_WAKE and ns.standby is not None:
                self._woke(ns)
            self._event(ns, EV_NAMES.get(f.body[d.K_EVENT], "event"), str(body_to_names(f.body)))

    def _woke(self, ns: NodeState) -> None:
        """A node in standby started on its own (the bus fell under its wake level): it now
        holds its standby voltage as if the setpoint had said on, so that is what this host
        renews until the control loop decides again (SPEC, Standby)."""
        assert ns.standby is not None
        ns.vout, ns.off_leased, ns.standby = ns.standby[0], False, None
        ns.woke_t = time.monotonic()

    def _event(self, ns: NodeState, kind: str, detail: str) -> None:
        t = time.time()
        ev = {"t": t, "node": ns.node.id, "kind": kind, "detail": detail}
        ns.events.append(ev)
        del ns.events[:-50]
        self.store.event(t, ns.node.id, kind, detail)
        if self.on_event is not None:
            self.on_event(ev)

    # ---- commands (from the API) -----------------------------------------------------------
    def _online(self, node_id: int) -> tuple[NodeState, NodeSession]:
        ns = self.nodes.get(node_id)
        if ns is None:
            raise NodeUnavailable(f"node {node_id} is not in rack {self.rack.name}")
        if ns.state != "online" or ns.session is None:
            raise NodeUnavailable(f"node {node_id} is {ns.state}")
        return ns, ns.session

    async def set_output(self, node_id: int, vout: float | None = None, on: bool | None = None,
                         standby: tuple[float, float] | None = None) -> dict[str, Any]:
        """Change a node's output: `vout` (V) and/or on/off; off with `standby` (V it
        starts at, V the bus must fall under), held ready (SPEC, Standby). ValueError when
        out of limits."""
        ns, s = self._online(node_id)
        target = ns.vout if vout is None else vout
        if on is False:
            await s.command(d.MSG_SETPOINT, off_body(LEASE_MS, standby))
            ns.vout = None
            ns.off_leased = True
            ns.standby = standby
            ns.standby_t = time.monotonic()  # telemetry that arrived before is of before
            return {"node": node_id, "on": False}
        if target is None:
            raise ValueError("the node has no output voltage yet: give vout")
        # judged as the node will see it: a float32 on the wire (1e-300 V arrives as 0 V)
        wire = round_f32(float(target))
        lo, hi = ns.node.vout_min, ns.vout_max
        if not lo <= wire <= hi:
            raise ValueError(f"vout {target} V (as sent: {wire:g} V) is outside node "
                             f"{node_id}'s rated {lo:g}..{hi:g} V; to turn the output off, "
                             "give on = false")
        await s.command(d.MSG_SETPOINT, {d.K_VOUT_COMMAND: wire, d.K_LEASE_MS: LEASE_MS})
        ns.vout = wire
        ns.off_leased = False
        ns.standby = None
        return {"node": node_id, "on": True, "vout": ns.vout}

    async def set_port(self, node_id: int, port: int, close: bool) -> dict[str, Any]:
        ns, s = self._online(node_id)
        nports = sum(1 for b in self.rack.branches if b.port and b.port[0] == node_id)
        if not 0 <= port < max(nports, 1):
            raise ValueError(f"node {node_id} has {nports} port(s) on the mesh; no port {port}")
        await s.command(d.MSG_PORT_SWITCH, {d.K_PORT: port, d.K_CLOSE: close})
        ns.ports[port] = close
        return {"node": node_id, "port": port, "closed": close}

    async def clear_faults(self, node_id: int) -> dict[str, Any]:
        _, s = self._online(node_id)
        await s.command(d.MSG_CLEAR_FAULTS, {})
        return {"node": node_id, "cleared": True}

    def snapshot(self) -> list[dict[str, Any]]:
        return [ns.summary() for ns in self.nodes.values()]
