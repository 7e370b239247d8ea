"""The host's control loop in real time, over a `RackIO` (real boards or the emulated rack):
every period, observe -> predict and allocate (`RackController`) -> dispatch (the one
dispatcher's commands, carried out by the RackIO); between periods, the supervisor's ticks,
which send the safe allocation at once when the measurements call for it.

Converters are switched off and ties opened only once two plans in a row agree, after
what replaces them is on (make before break). The loop's own time per period is kept for
the API and the bench.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from powerflow.control.alarms import Event
from powerflow.control.allocate import Allocation
from powerflow.control.controller import RackController
from powerflow.control.dispatch import Dispatcher
from powerflow.control.rackio import RackIO
from powerflow.control.policy import Policy

TICK_S = 0.25  # the supervisor looks at the measurements this often (at most)


class ControlLoop:
    def __init__(self, io: RackIO, controller: RackController,
                 on_events: Callable[[list[Event]], None] | None = None,
                 on_period: Callable[[Allocation], None] | None = None) -> None:
        self.io = io
        self.ctrl = controller
        self.dispatcher = Dispatcher(controller.rack)
        self.on_events = on_events or (lambda evs: None)
        self.on_period = on_period or (lambda a: None)  # each period's allocation, dispatched
        self.enabled = True
        self.periods = 0
        self.dispatch_errors = 0
        self.max_late_s = 0.0  # the latest any period started (s)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="control loop")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

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
            await self.period(late)
            io = self.io
            due += period
            if loop.time() - due > period:  # fell behind (e.g. suspended): restart the clock
                due = loop.time()
            while loop.time() < due - 1e-3:  # ticks until the next period is due
                await asyncio.sleep(max(0.0, min(tick, due - loop.time())))
                if self.enabled and self.ctrl.supervise(time.time(), io.observe_nodes()):
                    await self.dispatch(self.ctrl.safe_now(time.time(), io.observe_nodes(),
                                                           io.battery(), io.feed_w()))
                    self._store_events()

    async def period(self, late_s: float = 0.0) -> None:
        """One control period: poll the rack, and (unless paused) forecast, allocate and
        dispatch; `late_s` is how late it started (s)."""
        await self.io.poll()
        io = self.io
        if self.enabled:
            alloc = self.ctrl.step(time.time(), io.observe_nodes(), io.observe_devices(),
                                   io.battery(), io.feed_w(), late_s=max(late_s, 0.0))
            await self.dispatch(alloc)
            self.periods += 1
            self.on_period(alloc)
        self.max_late_s = max(self.max_late_s, late_s)
        self._store_events()

    def _store_events(self) -> None:
        evs = self.ctrl.alarms.drain()
        if evs:
            self.on_events(evs)

    async def dispatch(self, a: Allocation) -> None:
        """Send what `a` changes; tell the health judge what each node now holds."""
        cmds = self.dispatcher.commands(a, self.io.commanded())
        self.dispatch_errors += await self.io.apply(cmds)
        t = time.time()
        for nid, c in self.io.commanded().items():
            if c.online and nid in a.vref:
                self.ctrl.health.dispatched_vref(nid, c.vout, t)

    def preview(self, policy: Policy | None = None) -> Allocation:
        """The next allocation from the present observations (under `policy` if given), not
        applied."""
        io = self.io
        return self.ctrl.preview(time.time(), io.observe_nodes(), io.battery(), io.feed_w(),
                                 policy)
