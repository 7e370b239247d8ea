"""The fast-mode rack (emulator/fast.py) as a `RackIO`, on the scenario runner's virtual
clock: a command is one frame delivered and answered at once. Between periods `service()`
does what the node manager does on a live rack (a failsafe latch left by the host's absence
is cleared and the node taken over at its safe output), and `apply` renews every lease it
does not change, so a node holds its output as long as the runner runs. Device powers and
the feed are the runner's measurements over the period, handed in as `measure`."""

from __future__ import annotations

from collections.abc import Callable

from pfproto import defs as d
from powerflow.control.allocate import BatteryView
from powerflow.control.controller import DeviceObs, NodeObs
from powerflow.control.rackio import Commanded, Commands
from powerflow.emulator.fast import FastRack
from powerflow.nodeconfig import off_body
from powerflow.protocol.names import body_to_names

Measure = Callable[[], tuple[dict[str, DeviceObs], float]]  # (devices, feed W) this period


class FastRackIO:
    def __init__(self, fr: FastRack, lease_ms: int, measure: Measure) -> None:
        self.fr = fr
        self.rack = fr.rack
        self.lease_ms = lease_ms
        self.measure = measure
        self.vout: dict[int, float | None] = {n.id: None for n in fr.rack.nodes}
        self.off_leased: set[int] = set()
        self.standby: dict[int, tuple[float, float]] = {}  # of the off ones, those held ready
        self.woke_ms: dict[int, int] = {}  # node -> virtual ms it last started on its own
        self._events_seen = 0
        self._feed_w = 0.0
        self._devices: dict[str, DeviceObs] = {}

    # ---- commands ----------------------------------------------------------------------
    def set_output(self, nid: int, vref: float | None,
                   standby: tuple[float, float] | None = None) -> bool:
        """Lease node `nid` an output of `vref` V (None: off, held ready with `standby`: V
        it starts at, V the bus must fall under); True when it acknowledged."""
        if vref is None:
            body = off_body(self.lease_ms, standby)
        else:
            body = {d.K_VOUT_COMMAND: float(vref), d.K_LEASE_MS: self.lease_ms,
                    d.K_OPERATION: True}
        ack = self.fr.send(nid, d.MSG_SETPOINT, body)
        if ack is None or ack[d.K_RESULT] != d.RES_OK:
            return False
        self.vout[nid] = vref
        if vref is None:
            self.off_leased.add(nid)
        else:
            self.off_leased.discard(nid)
        if vref is None and standby is not None:
            self.standby[nid] = standby
        else:
            self.standby.pop(nid, None)
        return True

    def set_port(self, nid: int, port: int, close: bool) -> bool:
        ack = self.fr.send(nid, d.MSG_PORT_SWITCH, {d.K_PORT: port, d.K_CLOSE: close})
        return ack is not None and ack[d.K_RESULT] == d.RES_OK

    def service(self) -> None:
        """Between periods, as the node manager does: a node in standby that started on its
        own now holds its standby voltage; clear a failsafe latch the host's absence left
        and take the node over from where it is (on at its safe output)."""
        for t_ms, nid, body in self.fr.events[self._events_seen:]:
            if body.get(d.K_EVENT) == d.EV_WAKE and nid in self.standby:
                self.vout[nid] = self.standby.pop(nid)[0]
                self.off_leased.discard(nid)
                self.woke_ms[nid] = t_ms
        self._events_seen = len(self.fr.events)
        for nid, tel in self.fr.telemetry.items():
            if tel.get(d.K_FAULTS) != d.FAULT_FAILSAFE or nid in self.fr.cut:
                continue
            self.fr.send(nid, d.MSG_CLEAR_FAULTS, {})
            if tel.get(d.K_MODE) == d.MODE_FAILSAFE and (
                    self.vout[nid] is not None or nid in self.off_leased):
                node = next(n for n in self.rack.nodes if n.id == nid)
                self.vout[nid] = node.safe_vout(self.rack.bus_voltage)
                self.off_leased.discard(nid)
                self.standby.pop(nid, None)

    def apply_now(self, cmds: Commands) -> int:
        errors = 0
        for nid in self.vout:
            if nid in cmds.setpoints:
                errors += not self.set_output(nid, cmds.setpoints[nid], cmds.standby.get(nid))
            elif self.vout[nid] is not None or nid in self.off_leased:
                self.set_output(nid, self.vout[nid], self.standby.get(nid))  # the lease renewed
        for (nid, port), close in cmds.ports.items():
            errors += not self.set_port(nid, port, close)
        self.fr.physics.apply_devices(cmds.caps, cmds.battery_w, cmds.battery_shave_above_w,
                                      cmds.ramps)
        return errors

    async def apply(self, cmds: Commands) -> int:
        return self.apply_now(cmds)

    # ---- observe -----------------------------------------------------------------------
    async def poll(self) -> None:
        self.collect()

    def collect(self) -> None:
        """Take the period's device and feed measurements (once a period)."""
        self._devices, self._feed_w = self.measure()

    def observe_nodes(self) -> dict[int, NodeObs]:
        fr = self.fr
        out = {}
        for n in self.rack.nodes:
            tel = body_to_names(fr.telemetry.get(n.id, {}))
            age = (fr.now_ms - fr.telemetry_ms.get(n.id, -10**9)) / 1000.0
            woke = self.woke_ms.get(n.id)
            out[n.id] = NodeObs(n.id not in fr.cut, tel, age,
                                woke_age_s=None if woke is None else (fr.now_ms - woke) / 1000.0)
        return out

    def observe_devices(self) -> dict[str, DeviceObs]:
        return self._devices

    def battery(self) -> BatteryView | None:
        b = self.fr.physics.battery
        return None if b is None else BatteryView(b.soc, b.capacity_wh, b.p_charge_max,
                                                  b.p_discharge_max)

    def feed_w(self) -> float:
        return self._feed_w

    def commanded(self) -> dict[int, Commanded]:
        out = {}
        for n in self.rack.nodes:
            ps = body_to_names(self.fr.telemetry.get(n.id, {})).get("PORT_STATE")
            out[n.id] = Commanded(online=n.id not in self.fr.cut, vout=self.vout[n.id],
                                  off_leased=n.id in self.off_leased,
                                  port_state=None if ps is None else int(ps),
                                  vout_max=n.vout_max, standby=self.standby.get(n.id))
        return out
