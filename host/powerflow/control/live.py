"""The host's control loop on a live rack (real boards or the emulated rack): every period,
collect (node telemetry from the node manager, device samples from the device sources) ->
predict and allocate (`RackController`) -> dispatch (setpoints and on/off as leases through
the node manager, tie switches through their nodes' ports, caps and the battery command
to the device source).

Converters are switched off and ties opened only once two plans in a row agree, after
what replaces them is on (make before break). The loop's own time per period is kept for
the API and the bench.
"""

from __future__ import annotations

import asyncio
import time

from powerflow.control.allocate import Allocation, BatteryView
from powerflow.control.controller import DeviceObs, NodeObs, RackController
from powerflow.control.devices import AgentDevices, EmulatorDevices, PrometheusDevices
from powerflow.control.dispatch import make_before_break
from powerflow.model.mesh import port_closed
from powerflow.link.session import CommandError
from powerflow.manager import NodeManager, NodeUnavailable

TICK_S = 0.25  # the supervisor looks at the measurements this often (at most)


class ControlLoop:
    def __init__(self, manager: NodeManager, controller: RackController,
                 source: EmulatorDevices | None = None, agents: AgentDevices | None = None,
                 scraper: PrometheusDevices | None = None) -> None:
        self.manager = manager
        self.ctrl = controller
        self.source: EmulatorDevices | None = source
        self.agents = agents or AgentDevices({dv.id for dv in manager.rack.devices})
        self.scraper = scraper
        self.enabled = True
        self.periods = 0
        self.dispatch_errors = 0
        self.max_late_s = 0.0  # the latest any period started (s)
        self._seen_t: dict[int, float] = {}  # node -> arrival of the newest sample looked at
        self.prev: Allocation | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="control loop")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.scraper is not None:
            await self.scraper.close()

    # ---- collect -------------------------------------------------------------------------
    def observe_nodes(self) -> dict[int, NodeObs]:
        """Each node's link state and latest telemetry, with the lowest output voltage among
        the samples that arrived since the last look (so none is missed between looks)."""
        now = time.monotonic()
        out = {}
        for i, ns in self.manager.nodes.items():
            seen = self._seen_t.get(i, 0.0)
            new = [v for t, v in ns.vout_samples if t > seen]
            if ns.vout_samples:
                self._seen_t[i] = ns.vout_samples[-1][0]
            out[i] = NodeObs(ns.state == "online", dict(ns.telemetry),
                             now - ns.telemetry_t if ns.telemetry_t else float("inf"),
                             ns.lost_count, vout_low=min(new) if new else None)
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

    # ---- the loop ------------------------------------------------------------------------
    async def _run(self) -> None:
        """Every tick the supervisor checks the measurements (and sends the safe allocation
        at once when it trips); every period the full step runs. Each period's lateness
        (start against schedule) is measured and handed to the controller."""
        loop = asyncio.get_running_loop()
        due = last_start = loop.time()
        while True:
            period = self.ctrl.policy.period_s
            tick = min(TICK_S, period / 4)
            now = loop.time()
            # late against the schedule, or against the last period's start (a pause in the
            # middle of a period restarts the schedule, but not this)
            late = max(now - due, now - last_start - period)
            last_start = now
            if self.scraper is not None:
                await self.scraper.poll()
            if self.enabled:
                alloc = self.ctrl.step(time.time(), self.observe_nodes(), self.observe_devices(),
                                       self.battery(), self.feed_w(), late_s=max(late, 0.0))
                await self.dispatch(alloc)
                self.periods += 1
            self.max_late_s = max(self.max_late_s, late)
            self._store_events()
            due += period
            if loop.time() - due > period:  # fell behind (e.g. suspended): restart the clock
                due = loop.time()
            while loop.time() < due - 1e-3:  # ticks until the next period is due
                await asyncio.sleep(max(0.0, min(tick, due - loop.time())))
                if self.enabled and self.ctrl.supervise(time.time(), self.observe_nodes()):
                    await self.dispatch(self.ctrl.safe_now(time.time(), self.observe_nodes(),
                                                           self.battery(), self.feed_w()))
                    self._store_events()

    def _store_events(self) -> None:
        for ev in self.ctrl.alarms.drain():
            self.manager.store.event(ev.t, ev.node, ev.kind, ev.detail)

    async def dispatch(self, a: Allocation) -> None:
        m, rack = self.manager, self.manager.rack
        now = make_before_break(a, self.prev)

        async def one(nid: int, vref: float | None) -> None:
            ns = m.nodes[nid]
            if ns.state != "online":
                return
            try:
                if vref is None:
                    if (nid not in now.hold and ns.vout is not None) or (
                            ns.vout is None and not ns.off_leased):
                        await m.set_output(nid, on=False)
                elif ns.vout is None or abs(ns.vout - vref) > 0.002:
                    await m.set_output(nid, vout=min(vref, ns.node.vout_max))
                self.ctrl.health.dispatched_vref(nid, ns.vout, time.time())
            except (CommandError, NodeUnavailable, ValueError):
                self.dispatch_errors += 1  # the lease keeps the last good state meanwhile

        await asyncio.gather(*(one(nid, v) for nid, v in a.vref.items()))
        for k, want in now.ports.items():
            b = rack.branches[k]
            if b.port is None:
                continue
            ns = m.nodes[b.port[0]]
            state = ns.telemetry.get("PORT_STATE")
            if ns.state != "online" or state is None or port_closed(int(state), b.port[1]) == want:
                continue
            try:
                await m.set_port(b.port[0], b.port[1], want)
            except (CommandError, NodeUnavailable, ValueError):
                self.dispatch_errors += 1  # e.g. interlock: tried again next period
        self.agents.apply(a.caps, a.battery_w, a.battery_shave_above_w)
        if self.source is not None:
            self.source.apply(a.caps, a.battery_w, a.battery_shave_above_w)
        self.prev = a

    def preview(self) -> Allocation:
        return self.ctrl.preview(time.time(), self.observe_nodes(), self.battery(), self.feed_w())
