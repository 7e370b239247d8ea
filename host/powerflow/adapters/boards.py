"""The live rack as a `RackIO`: nodes through the node manager (real boards over serial or
TCP, or the full-process emulated rack over its ptys), devices from their sources (the
emulated rack's physics, agents, Prometheus exporters). The manager renews every lease each
second; this carries out the dispatcher's commands and keeps what each node holds."""

from __future__ import annotations

import asyncio
import time

from powerflow.adapters.devices import AgentDevices, EmulatorDevices, PrometheusDevices
from powerflow.control.allocate import BatteryView
from powerflow.control.controller import DeviceObs, NodeObs
from powerflow.control.rackio import Commanded, Commands
from powerflow.link.session import CommandError
from powerflow.manager import NodeManager, NodeUnavailable


class BoardsIO:
    def __init__(self, manager: NodeManager, source: EmulatorDevices | None = None,
                 agents: AgentDevices | None = None,
                 scraper: PrometheusDevices | None = None) -> None:
        self.manager = manager
        self.rack = manager.rack
        self.source = source
        self.agents = agents or AgentDevices({dv.id for dv in manager.rack.devices})
        self.scraper = scraper
        self._seen_t: dict[int, float] = {}  # node -> arrival of the newest sample looked at

    # ---- observe ---------------------------------------------------------------------------
    def observe_nodes(self) -> dict[int, NodeObs]:
        now = time.monotonic()
        out = {}
        for i, ns in self.manager.nodes.items():
            seen = self._seen_t.get(i, 0.0)
            new = [v for t, v in ns.vout_samples if t > seen]
            if ns.vout_samples:
                self._seen_t[i] = ns.vout_samples[-1][0]
            out[i] = NodeObs(ns.state == "online", dict(ns.telemetry),
                             now - ns.telemetry_t if ns.telemetry_t else float("inf"),
                             ns.lost_count, vout_low=min(new) if new else None,
                             woke_age_s=now - ns.woke_t if ns.woke_t else None)
        return out

    def observe_devices(self) -> dict[str, DeviceObs]:
        obs = self.agents.read()
        if self.source is not None:
            obs = {**self.source.read(), **obs}
        if self.scraper is not None:
            obs = self.scraper.merge(obs)
        return obs

    def battery(self) -> BatteryView | None:
        return None if self.source is None else self.source.battery()

    def feed_w(self) -> float:
        return float(sum(float(ns.telemetry.get("READ_VIN") or 0.0)
                         * float(ns.telemetry.get("READ_IIN") or 0.0)
                         for ns in self.manager.nodes.values() if ns.state == "online"))

    def commanded(self) -> dict[int, Commanded]:
        out = {}
        for i, ns in self.manager.nodes.items():
            ps = ns.telemetry.get("PORT_STATE")
            out[i] = Commanded(online=ns.state == "online", vout=ns.vout,
                               off_leased=ns.off_leased,
                               port_state=None if ps is None else int(ps),
                               vout_max=ns.node.vout_max, standby=ns.standby)
        return out

    async def poll(self) -> None:
        if self.scraper is not None:
            await self.scraper.poll()

    # ---- act -------------------------------------------------------------------------------
    async def apply(self, cmds: Commands) -> int:
        m = self.manager
        errors = 0

        async def setpoint(nid: int, vref: float | None) -> int:
            try:
                if vref is None:
                    await m.set_output(nid, on=False, standby=cmds.standby.get(nid))
                else:
                    await m.set_output(nid, vout=vref)
                return 0
            except (CommandError, NodeUnavailable, ValueError):
                return 1  # the lease keeps the last good state meanwhile

        errors += sum(await asyncio.gather(*(setpoint(nid, v)
                                             for nid, v in cmds.setpoints.items())))
        for (nid, port), close in cmds.ports.items():
            try:
                await m.set_port(nid, port, close)
            except (CommandError, NodeUnavailable, ValueError):
                errors += 1  # e.g. interlock: tried again next period
        self.agents.apply(cmds.caps, cmds.battery_w, cmds.battery_shave_above_w, cmds.ramps)
        if self.source is not None:
            self.source.apply(cmds.caps, cmds.battery_w, cmds.battery_shave_above_w, cmds.ramps)
        return errors

    async def close(self) -> None:
        if self.scraper is not None:
            await self.scraper.close()
