"""The site controller: budgets for every rack each site period, active or standby.

Every controller (active or standby) keeps the same ledger of the site from the broker: each
rack's birth, latest report, and every budget sent to it by any controller with the acks
that answer them. From the ledger it knows the most each rack may be obeying now
(`committed_w`: the largest lease that has not expired and is not superseded by an
acknowledged later one), so a controller that takes over keeps to the leases its
predecessor granted (break before make across a failover too).

Only the active controller allocates and sends budgets. Roles:
- at start a controller subscribes, then publishes its own state and waits for that echo:
  the broker delivers in order, so by then every retained message has arrived. If another
  controller is the active one and online, it is standby; otherwise it takes over.
- taking over: epoch = one above the highest seen anywhere (the active state, racks'
  reports, budgets in the ledger); the active state is published retained, and this
  controller's state topic carries its will (online: false, retained).
- the standby takes over when the active's death arrives (its will); an active that sees
  another active with a higher (epoch, id) steps down, and racks accept only the highest
  (epoch, id): never two controllers steering one rack.

Units: W, s (Unix time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import cbor2
import numpy as np

from powerflow.model.site import Site
from powerflow.site.allocate import SiteAllocation, allocate, compile_tree, dispatch
from powerflow.site.messages import (CLOCK_SKEW_S, PREFIX, Ack, Active, Birth, Budget,
                                     MessageError, Report, active_topic, encode,
                                     parse_rack_topic, rack_topic)
from powerflow.site.mqtt import BrokerAddress

log = logging.getLogger("powerflow.site")


def controller_topic(site: str, cid: str) -> str:
    return f"{PREFIX}/{site}/controller/{cid}"


@dataclass
class RackLedger:
    """What the site knows of one rack."""

    birth: Birth | None = None
    online: bool = False
    report: Report | None = None
    report_at: float = 0.0  # s, when it arrived
    sent: list[tuple[int, str, int, float, float]] = field(default_factory=list)
    # (epoch, controller, seq, budget W, expires at s) of budgets not yet superseded
    acked: tuple[int, str, int] | None = None  # the newest budget it acknowledged taking
    last_granted_w: float | None = None
    refused: dict[str, int] = field(default_factory=dict)  # reason -> count (its acks)

    def committed_w(self, now: float, floor_w: float) -> float:
        """The most this rack may be obeying now (W)."""
        live = [w for (_e, _c, _s, w, exp) in self.sent if exp > now]
        if live:
            return max(live)
        # no lease can be in force: it holds its fallback, never above the last grant
        safe = self.birth.safe_w if self.birth is not None else floor_w
        w = safe if self.last_granted_w is None else min(safe, self.last_granted_w)
        return max(w, floor_w)


@dataclass
class SiteController:
    site: Site
    addr: BrokerAddress
    cid: str  # this controller's id (its MQTT client id and user name)
    clock: Callable[[], float] = time.time
    role: str = "starting"  # starting | standby | active
    epoch: int = 0
    seq: int = 0
    active: Active | None = None  # the retained active state as last seen
    racks: dict[str, RackLedger] = field(default_factory=dict)  # by client id
    last: SiteAllocation | None = None
    last_t: float = 0.0
    lost_feeds: dict[str, float] = field(default_factory=dict)  # feed id -> since (s)
    malformed: dict[str, int] = field(default_factory=dict)
    periods: int = 0
    took_over_at: float | None = None
    max_epoch_seen: int = -1
    _synced: asyncio.Event = field(default_factory=asyncio.Event)
    _takeover: asyncio.Event = field(default_factory=asyncio.Event)
    _make_due: bool = False  # an ack released budget that a planned increase waits for
    _wake: asyncio.Event = field(default_factory=asyncio.Event)  # takeover or make due

    def __post_init__(self) -> None:
        self.by_client = {r.client: k for k, r in enumerate(self.site.racks)}
        for r in self.site.racks:
            self.racks.setdefault(r.client, RackLedger())
        self.floor = np.array([r.floor_w for r in self.site.racks])
        self.prio_class = {p: self.site.class_of(p) for p in range(1, 11)}

    # ---- the ledger -----------------------------------------------------------------
    def _bad(self, reason: str, detail: str) -> None:
        self.malformed[reason] = self.malformed.get(reason, 0) + 1
        log.warning("site: refused %s: %s", reason, detail)

    def handle(self, topic: str, payload: bytes) -> None:
        """Fold one message into the ledger (every role)."""
        now = self.clock()
        name = self.site.name
        if topic == active_topic(name):
            if not payload:
                self.active = None
                return
            try:
                a = Active.decode(payload)
            except MessageError as e:
                self._bad("malformed_active", str(e))
                return
            self.active = a
            self.max_epoch_seen = max(self.max_epoch_seen, a.epoch)
            if (self.role == "active" and a.controller != self.cid
                    and (a.epoch, a.controller) > (self.epoch, self.cid)):
                log.warning("site: %s is active in epoch %d: standing down", a.controller,
                            a.epoch)
                self.role = "standby"
            return
        if topic.startswith(f"{PREFIX}/{name}/feed/"):
            # a feed's state from the site's power monitor (a controller-class user)
            fid = topic.rsplit("/", 1)[-1]
            try:
                lost = cbor2.loads(payload)["lost"] if payload else False
            except Exception:
                lost = None
            if fid not in {f.id for f in self.site.feeds} or not isinstance(lost, bool):
                self._bad("malformed_feed", topic)
            elif lost:
                self.lost_feeds.setdefault(fid, now)
            else:
                self.lost_feeds.pop(fid, None)
            return
        if topic.startswith(f"{PREFIX}/{name}/controller/"):
            who = topic.rsplit("/", 1)[-1]
            if who == self.cid and payload:
                self._synced.set()
            try:
                st = cbor2.loads(payload) if payload else {"online": False}
            except Exception:
                st = {"online": False}
            if (isinstance(st, dict) and st.get("online") is False and self.active is not None
                    and who == self.active.controller and who != self.cid
                    and self.role == "standby"):
                log.warning("site: active controller %s is gone: taking over", who)
                self._takeover.set()
                self._wake.set()
            return
        parsed = parse_rack_topic(name, topic)
        if parsed is None:
            return
        client, what = parsed
        if client not in self.racks:
            self._bad("unknown_rack", topic)
            return
        led = self.racks[client]
        k = self.by_client[client]
        try:
            if what == "birth":
                led.birth, led.online = Birth.decode(payload), True
            elif what == "death":
                led.online = False
            elif what == "report":
                rep = Report.decode(payload, self.site.racks[k].feed_limit_w)
                led.report, led.report_at, led.online = rep, now, True
                self.max_epoch_seen = max(self.max_epoch_seen, rep.epoch)
            elif what == "ack":
                ack = Ack.decode(payload)
                key = (ack.epoch, ack.controller, ack.budget_seq)
                if ack.accepted:
                    before = led.committed_w(now, self.site.racks[k].floor_w)
                    led.acked = key
                    led.last_granted_w = ack.budget_w
                    # every older budget is superseded at the rack: it obeys this one
                    led.sent = [s for s in led.sent if s[:3] >= key]
                    if (self.role == "active"
                            and led.committed_w(now, self.site.racks[k].floor_w) < before):
                        # break confirmed: the increases it waited for can be made now,
                        # not a period later
                        self._make_due = True
                        self._wake.set()
                else:
                    led.refused[ack.reason] = led.refused.get(ack.reason, 0) + 1
        except MessageError as e:
            self._bad(f"malformed_{what}", f"{client}: {e}")

    def note_budget(self, client: str, b: Budget) -> None:
        """A budget sent (by this or another controller): the rack may obey it until
        its lease runs out, counted from when it was sent."""
        led = self.racks[client]
        led.sent.append((b.epoch, b.controller, b.seq, b.budget_w,
                         b.t + b.lease_s + CLOCK_SKEW_S))
        self.max_epoch_seen = max(self.max_epoch_seen, b.epoch)

    # ---- allocation -------------------------------------------------------------------
    def limits(self, now: float) -> tuple[Any, Any]:
        """The tree in force (lost feeds under their backups) and each node's limit now:
        a backup carrying a lost feed may use its overload allowance for its duration."""
        lost = frozenset(self.lost_feeds)
        tree = compile_tree(self.site, lost)
        limit = tree.limit_w.copy()
        for f in self.site.feeds:
            if f.id in lost and f.backup is not None and f.backup not in lost:
                b = tree.ids.index(f.backup)
                # the allowance is used only while a cut back to the continuous limit can
                # still land before it runs out (a lease and a period)
                margin = self.site.policy.lease_s + self.site.policy.period_s
                if now - self.lost_feeds[f.id] < tree.overload_s[b] - margin:
                    limit[b] *= 1 + tree.overload_frac[b]
        return tree, limit

    def plan(self, now: float) -> tuple[SiteAllocation, Any, Any, Any]:
        """Target and sendable budgets from the ledger (W per rack, site.racks order)."""
        tree, limit = self.limits(now)
        nr, nc = len(self.site.racks), len(self.site.classes)
        mn, p95 = np.zeros((nr, nc)), np.zeros((nr, nc))
        floor = self.floor.copy()
        committed = np.zeros(nr)
        stale_after = self.site.policy.lease_s
        for k, r in enumerate(self.site.racks):
            led = self.racks[r.client]
            committed[k] = led.committed_w(now, r.floor_w)
            rep = led.report
            if rep is None or now - led.report_at > stale_after or not led.online:
                # silent: it may draw what it may be obeying; nothing more is planned for it
                floor[k] = min(max(floor[k], committed[k]), r.feed_limit_w)
                continue
            for p, c in rep.classes.items():
                j = self.prio_class[p]
                mn[k, j] += c.min_w
                p95[k, j] += c.p95_w
        prev = None if self.last is None else self.last.budget_w
        alloc = allocate(tree, limit, floor, mn, p95, self.site.policy.redistribute,
                         prev, self.site.policy.hysteresis_w)
        send = dispatch(tree, limit, alloc.budget_w, committed)
        return alloc, send, committed, (tree, limit)

    async def period(self, c: aiomqtt.Client) -> None:
        """One site period as the active controller: plan and send every live rack's lease."""
        now = self.clock()
        alloc, send, _committed, _ = self.plan(now)
        self.last, self.last_t = alloc, now
        self.periods += 1
        sends = []
        for k, r in enumerate(self.site.racks):
            led = self.racks[r.client]
            if led.birth is None:
                # born before we subscribed (or we restarted): Sparkplug's rebirth request
                sends.append(c.publish(rack_topic(self.site.name, r.client, "cmd/rebirth"), b"",
                                       qos=1))
                continue
            if not self._renewable(led, now):
                continue
            # rounded down to the centiwatt: a budget never rounds over a limit
            b = Budget(seq=self._next(), t=now, budget_w=math.floor(float(send[k]) * 100) / 100,
                       lease_s=self.site.policy.lease_s, epoch=self.epoch, controller=self.cid)
            self.note_budget(r.client, b)
            sends.append(c.publish(rack_topic(self.site.name, r.client, "cmd/budget"),
                                   encode(b), qos=1))
        # all at once: each QoS 1 publish waits for its PUBACK, a round trip each in turn
        await asyncio.gather(*sends)

    def _renewable(self, led: RackLedger, now: float) -> bool:
        """A lease is renewed only on evidence of life: a rack silent for a lease (cut off,
        its agent hung) is left to run out to its own fallback."""
        return led.online and (led.report is None
                               or now - led.report_at <= self.site.policy.lease_s)

    async def make(self, c: aiomqtt.Client) -> None:
        """Between periods, after a rack took a lower budget: send the increases of the last
        plan that now fit (break-before-make, with the make as soon as the break is
        acknowledged)."""
        if self.last is None:
            return
        now = self.clock()
        tree, limit = self.limits(now)
        committed = np.array([self.racks[r.client].committed_w(now, r.floor_w)
                              for r in self.site.racks])
        send = dispatch(tree, limit, self.last.budget_w, committed)
        sends = []
        for k, r in enumerate(self.site.racks):
            led = self.racks[r.client]
            if not led.sent or led.birth is None or not self._renewable(led, now):
                continue
            newest = max(led.sent, key=lambda x: x[:3])[3]
            w = math.floor(float(send[k]) * 100) / 100
            if w > newest + 0.5:
                b = Budget(seq=self._next(), t=now, budget_w=w, lease_s=self.site.policy.lease_s,
                           epoch=self.epoch, controller=self.cid)
                self.note_budget(r.client, b)
                sends.append(c.publish(rack_topic(self.site.name, r.client, "cmd/budget"),
                                       encode(b), qos=1))
        await asyncio.gather(*sends)

    def _next(self) -> int:
        self.seq += 1
        return self.seq - 1

    # ---- roles and the session -----------------------------------------------------------
    async def _take_over(self, c: aiomqtt.Client) -> None:
        self.epoch = max(self.max_epoch_seen, self.epoch) + 1
        self.role = "active"
        self.took_over_at = self.clock()
        self.active = Active(controller=self.cid, epoch=self.epoch, online=True, t=self.clock())
        await c.publish(active_topic(self.site.name), encode(self.active), qos=1, retain=True)
        await c.publish(controller_topic(self.site.name, self.cid),
                        cbor2.dumps({"online": True, "role": "active", "epoch": self.epoch}),
                        qos=1, retain=True)
        log.info("site: %s active in epoch %d", self.cid, self.epoch)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve the site until `stop` is set, reconnecting after a broker loss."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self._session(stop)
            except aiomqtt.MqttError as e:
                log.warning("site: broker lost (%s): reconnecting", e)
            if self.role == "active":
                self.role = "starting"  # after a broker loss: decide again from the retained
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async def _session(self, stop: asyncio.Event) -> None:
        name = self.site.name
        will = aiomqtt.Will(controller_topic(name, self.cid), cbor2.dumps({"online": False}),
                            qos=1, retain=True)
        async with self.addr.client(self.cid, will) as c:
            self._synced.clear()
            self._takeover.clear()
            await c.subscribe(f"{PREFIX}/{name}/#", qos=1)
            reader = asyncio.create_task(self._read(c))
            try:
                await c.publish(controller_topic(name, self.cid),
                                cbor2.dumps({"online": True, "role": "starting"}), qos=1,
                                retain=True)
                await asyncio.wait_for(self._synced.wait(), 10.0)
                a = self.active
                if a is None or not a.online or a.controller == self.cid:
                    await self._take_over(c)
                else:
                    self.role = "standby"
                    log.info("site: %s standby (active: %s epoch %d)", self.cid, a.controller,
                             a.epoch)
                period = self.site.policy.period_s
                next_t = time.monotonic()
                while not stop.is_set() and not reader.done():
                    if self.role == "standby" and self._takeover.is_set():
                        self._takeover.clear()
                        await self._take_over(c)
                        next_t = time.monotonic()
                    self._wake.clear()
                    if self.role == "active" and self._make_due:
                        self._make_due = False
                        await self.make(c)
                    if self.role == "active" and time.monotonic() >= next_t:
                        await self.period(c)
                        next_t += period
                        if next_t < time.monotonic():  # late: skip, do not burst
                            next_t = time.monotonic() + period
                    wait = max(next_t - time.monotonic(), 0.0) if self.role == "active" else period
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), min(wait, 0.5))
                if reader.done() and reader.exception() is not None:
                    raise reader.exception()  # type: ignore[misc]
            finally:
                reader.cancel()
                # gather: a cancellation of this task arriving here goes on (see agent.py)
                await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, c: aiomqtt.Client) -> None:
        async for m in c.messages:
            topic, payload = str(m.topic), bytes(m.payload)  # type: ignore[arg-type]
            parts = topic.split("/")
            if (len(parts) == 7 and parts[-2:] == ["cmd", "budget"]
                    and topic.startswith(f"{PREFIX}/{self.site.name}/rack/")):
                # a budget of any controller (the active's, seen by a standby): the ledger
                if parts[4] in self.racks:
                    try:
                        b = Budget.decode(payload)
                    except MessageError:
                        continue
                    if b.controller != self.cid:  # our own are in the ledger already
                        self.note_budget(parts[4], b)
                continue
            self.handle(topic, payload)

    # ---- what the API shows ---------------------------------------------------------------
    def tree_state(self) -> dict[str, Any]:
        """The tree with limits, measured demand, budgets and reasons (W)."""
        now = self.clock()
        tree, limit = self.limits(now)
        a = self.last
        nr = len(self.site.racks)
        measured = np.array([(self.racks[r.client].report.measured_w  # type: ignore[union-attr]
                              if self.racks[r.client].report is not None else 0.0)
                             for r in self.site.racks])
        m_node = tree.under(measured)
        b_node = a.load_w if a is not None else np.zeros(tree.n)
        nodes = []
        for n in range(tree.n):
            nodes.append({"id": tree.ids[n], "kind": tree.kind[n],
                          "parent": None if tree.parent[n] < 0 else tree.ids[tree.parent[n]],
                          "limit_w": None if not np.isfinite(limit[n]) else round(float(limit[n]), 1),
                          "measured_w": round(float(m_node[n]), 1),
                          "budget_w": round(float(b_node[n]), 1)})
        racks = []
        for k, r in enumerate(self.site.racks):
            led = self.racks[r.client]
            rep = led.report
            racks.append({
                "id": r.id, "client": r.client, "parent": r.parent, "online": led.online,
                "floor_w": r.floor_w, "feed_limit_w": r.feed_limit_w,
                "measured_w": None if rep is None else round(rep.measured_w, 1),
                "demand_p95_w": None if rep is None else round(
                    sum(c.p95_w for c in rep.classes.values()), 1),
                "budget_w": None if a is None or k >= nr else round(float(a.budget_w[k]), 1),
                "committed_w": round(led.committed_w(now, r.floor_w), 1),
                "reason": None if a is None else a.reason[k],
                "acks_refused": dict(led.refused)})
        return {"site": self.site.name, "controller": self.cid, "role": self.role,
                "epoch": self.epoch, "period_s": self.site.policy.period_s,
                "periods": self.periods, "lost_feeds": sorted(self.lost_feeds),
                "malformed": dict(self.malformed), "nodes": nodes, "racks": racks}
