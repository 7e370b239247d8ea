"""A rack's side of the site protocol: report every period, take budget leases, ack them.

`SiteAgent` connects to the site's broker as the rack's client id (its will is its death
certificate), publishes its birth and, every site period, a report of what the rack
measures and forecasts (`RackDemand`, from the rack controller or a stand-in's trace) — and
at once, between periods, when its P95 demand moves by more than `EXCEPTION_FRAC` of its feed
limit (Sparkplug's report by exception), so a surge reaches the site within a quarter period
rather than a whole one. Each
budget that arrives goes to the rack's `SiteBudget`, which takes, clamps or refuses it; the
verdict goes back as an ack. Losing the broker changes nothing here but the reconnecting:
without new leases the budget falls to the safe budget by itself, and a new lease after
reconnecting lifts it again (no restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from powerflow.control.allocate import Allocation
from powerflow.control.budget import SiteBudget
from powerflow.model.rack import Rack
from powerflow.site.messages import (CLOCK_SKEW_S, Ack, Birth, Budget, ClassDemand,
                                     MessageError, Report, active_topic, encode, rack_topic)
from powerflow.site.mqtt import BrokerAddress

log = logging.getLogger("powerflow.site")
RECONNECT_S = 1.0
EXCEPTION_FRAC = 0.05  # of the feed limit: a P95 move that is reported before its period
CANCEL_RETRY_S = 0.5  # s between cancels of a task that has not ended
LOOKS_PER_PERIOD = 4  # how often the demand is looked at between reports


@dataclass(frozen=True)
class RackDemand:
    """What a rack tells the site of itself (W at its feed)."""

    measured_w: float
    min_w: float
    headroom_w: float
    classes: dict[int, ClassDemand]


def device_p95_w(plan: dict[str, Any]) -> float:
    """A device's P95 demand as the site should see it (W): its forecast's, or, while the
    supply holds it at a cap below its ceiling, the ceiling. A capped device draws its cap, so
    its forecast says only that; what it would draw once free is unknown up to its ceiling,
    which is also what the rack's own allocator takes a release to cost."""
    cap, ceiling = plan["cap_w"], float(plan["ceiling_w"])
    if cap is not None and float(cap) < ceiling - 1e-6:
        return max(float(plan["p95_w"]), ceiling)
    return float(plan["p95_w"])


def rack_demand(rack: Rack, alloc: Allocation | None, measured_w: float) -> RackDemand:
    """A rack controller's demand by priority, from its last allocation: forecast mean and
    P95 per priority level (a device the supply holds below its ceiling counted at its
    ceiling: `device_p95_w`), the least each level can be capped to (its devices' p_min),
    all scaled from the devices to the feed by the allocation's own feed/device ratio."""
    classes: dict[int, list[float]] = {}
    if alloc is None:
        for dv in rack.devices:
            c = classes.setdefault(dv.priority, [0.0, 0.0, 0.0])
            c[0] += dv.p_nom_w
            c[1] += dv.p_max_w
            c[2] += dv.p_min_w
        ratio, headroom = 1 / 0.95, 0.0
    else:
        dev_sum = sum(v["forecast_w"] for v in alloc.devices.values())
        feed = alloc.predicted.get("feed_w", 0.0)
        ratio = feed / dev_sum if dev_sum > 1.0 and feed > dev_sum else 1 / 0.95
        for dv in rack.devices:
            v = alloc.devices[dv.id]
            c = classes.setdefault(dv.priority, [0.0, 0.0, 0.0])
            c[0] += v["forecast_w"]
            c[1] += device_p95_w(v)
            c[2] += dv.p_min_w
        on = sum(n["plan_limit_w"] for n in alloc.nodes.values() if n["on"])
        headroom = max(on - sum(n["share_w"] for n in alloc.nodes.values()), 0.0)
    out = {p: ClassDemand(mean_w=round(m * ratio, 2), p95_w=round(max(u, lo) * ratio, 2),
                          min_w=round(lo * ratio, 2)) for p, (m, u, lo) in classes.items()}
    return RackDemand(measured_w=round(max(measured_w, 0.0), 2),
                      min_w=round(sum(c.min_w for c in out.values()), 2),
                      headroom_w=round(headroom, 2), classes=out)


async def _cancel_all(tasks: tuple[asyncio.Task, ...]) -> None:
    """Cancel `tasks` and wait until every one has ended. On Python 3.11 asyncio.wait_for (in
    aiomqtt's publish) swallows a cancel that arrives as the publish completes, and the task
    goes on to its next await (a fresh-clone test run hung so): it is cancelled again until it
    ends. A cancel of the caller while it waits here goes on (asyncio.wait swallows none)."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_RETRY_S)
    await asyncio.gather(*tasks, return_exceptions=True)  # retrieve what they raised


@dataclass
class SiteAgent:
    addr: BrokerAddress
    site: str
    client: str
    budget: SiteBudget
    demand: Callable[[float], RackDemand]  # now -> the rack's demand
    period_s: float = 2.0
    clock: Callable[[], float] = time.time
    seq: int = 0
    malformed: dict[str, int] = field(default_factory=dict)  # reason -> count
    connected: bool = False
    connects: int = 0
    budgets_seen: int = 0

    def topic(self, what: str) -> str:
        return rack_topic(self.site, self.client, what)

    def _next(self) -> int:
        self.seq += 1
        return self.seq - 1

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Connect, and reconnect after every loss, until `stop` is set (or cancelled)."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            will = aiomqtt.Will(self.topic("death"), encode(_Death(self.client)), qos=1)
            try:
                async with self.addr.client(self.client, will) as c:
                    self.connected, self.connects = True, self.connects + 1
                    log.info("site: connected to %s:%d as %s", self.addr.host, self.addr.port,
                             self.client)
                    await self._session(c, stop)
            except aiomqtt.MqttError as e:
                if self.connected:
                    log.warning("site: broker lost (%s): reconnecting", e)
                    if self.budget.alarms is not None:
                        self.budget.alarms.event(self.clock(), "site_broker",
                                                 f"broker lost: {e}")
            finally:
                self.connected = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RECONNECT_S)

    async def _session(self, c: aiomqtt.Client, stop: asyncio.Event) -> None:
        self.seq = 0  # Sparkplug: sequence numbers start again with each birth
        await c.subscribe(self.topic("cmd/#"), qos=1)
        await c.subscribe(active_topic(self.site), qos=1)
        await self._birth(c)
        ended = asyncio.Event()
        reporter = asyncio.create_task(self._report_every_period(c, ended))
        reader = asyncio.create_task(self._read(c, ended))
        stopper = asyncio.create_task(stop.wait())
        try:
            # the session ends when the broker goes (the reader's MqttError, raised here for
            # `run` to reconnect) or when `stop` is set, whether or not a message comes
            done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                reader.result()
        finally:
            ended.set()
            await _cancel_all((reporter, reader, stopper))

    async def _read(self, c: aiomqtt.Client, ended: asyncio.Event) -> None:
        async for m in c.messages:
            if ended.is_set():
                return
            await self._handle(c, str(m.topic), bytes(m.payload))  # type: ignore[arg-type]

    async def _birth(self, c: aiomqtt.Client) -> None:
        b = self.budget
        await c.publish(self.topic("birth"), encode(Birth(
            seq=self._next(), t=self.clock(), floor_w=b.floor_w, safe_w=b.safe_w,
            feed_limit_w=b.feed_limit_w)), qos=1)

    async def _report_every_period(self, c: aiomqtt.Client, ended: asyncio.Event) -> None:
        look = self.period_s / LOOKS_PER_PERIOD
        while not ended.is_set():
            last = await self.publish_report(c)
            sent = [sum(x.p95_w for x in last.classes.values())]
            for _ in range(LOOKS_PER_PERIOD - 1):
                await asyncio.sleep(look)
                if ended.is_set():
                    return
                d = self.demand(self.clock())
                p95 = sum(x.p95_w for x in d.classes.values())
                if abs(p95 - sent[-1]) > EXCEPTION_FRAC * self.budget.feed_limit_w:
                    await self.publish_report(c, d)
                    sent.append(p95)
            await asyncio.sleep(look)

    async def publish_report(self, c: aiomqtt.Client, d: RackDemand | None = None) -> RackDemand:
        """Publish a report of `d` (None: the demand now); what was reported."""
        now = self.clock()
        d = d if d is not None else self.demand(now)
        b = self.budget
        await c.publish(self.topic("report"), encode(Report(
            seq=self._next(), t=now, measured_w=d.measured_w, min_w=d.min_w,
            headroom_w=d.headroom_w, budget_w=b.limit_w(now), lease_valid=b.valid(now),
            epoch=b.epoch, classes=d.classes)), qos=0)
        return d

    def _bad(self, reason: str, detail: str) -> None:
        self.malformed[reason] = self.malformed.get(reason, 0) + 1
        if self.budget.alarms is not None:
            self.budget.alarms.event(self.clock(), "site_message_refused", f"{reason}: {detail}")

    async def _handle(self, c: aiomqtt.Client, topic: str, payload: bytes) -> None:
        if topic == self.topic("cmd/rebirth"):
            await self._birth(c)
            return
        if topic != self.topic("cmd/budget"):
            return  # the active state: racks need nothing from it but the epoch in budgets
        try:
            msg = Budget.decode(payload)
        except MessageError as e:
            self._bad("malformed_budget", str(e))
            return
        self.budgets_seen += 1
        now = self.clock()
        # the lease runs from when the controller sent it (clocks within CLOCK_SKEW_S): a
        # budget delayed in flight does not live longer than the controller counts on
        lease = min(msg.lease_s, msg.t + msg.lease_s + CLOCK_SKEW_S - now)
        v = self.budget.offer(now, msg.budget_w, lease, msg.epoch, msg.controller, msg.seq)
        await c.publish(self.topic("ack"), encode(Ack(
            seq=self._next(), t=now, budget_seq=msg.seq, epoch=msg.epoch,
            controller=msg.controller, accepted=v.accepted,
            budget_w=self.budget.limit_w(now), reason=v.reason)), qos=1)


@dataclass(frozen=True)
class _Death:
    client: str
