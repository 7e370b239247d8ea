"""Site scenarios: a site file, rack stand-ins with demand traces, site controllers as
processes (`powerflow site run`, so one can be SIGKILLed) and a real Mosquitto, with events
on a timeline, and what was measured.

    [scenario]  site (path, relative to the scenario file), duration_s, period_s (default
                0.5: the site file's period scaled down, leases with it), controllers (1 or 2),
                load = [level, swing, cycle_s] (each rack's demand as a fraction of its feed
                limit, default [0.8, 0.15, 20])
    [[event]]   at_s, kind = lose_feed | restore_feed | surge | broker_restart | partition |
                heal | kill_active; feed (lose/restore), rack (surge, partition, heal),
                factor (surge, default 2)
    [expect]    breaker_violations, priority_inversions, lease_violations (at most),
                max_failover_s, max_reaction_periods, stranded_w_mean (at most)

Outcomes, counted per site period from what the stand-ins draw (not what was planned):
- breaker_violations: periods in which any feed or breaker carried more than its limit, or
  more than its overload allowance while it is allowed one (a backup carrying a lost feed,
  for its overload_s);
- priority_inversions: periods in which a class was held below its demand at a rack while,
  under a feed or breaker at its limit above it, a less important class drew more than its
  minimum;
- lease_violations: periods in which a rack drew above the budget it held (its lease, or
  without one its fallback);
- max_failover_s: from a kill_active to every rack holding a lease of the new controller;
- max_reaction_s, max_reaction_periods: from a surge at one rack to the first budget of
  every neighbour (the racks under the same breaker) that differs from the one it held by
  more than the hysteresis — the budgets that make room — in s and in site periods (None:
  never within the run);
- stranded_w_mean: the mean over periods of the demand left unmet at capped racks that
  unused budget under the same feed could have met (W).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import numpy as np

from powerflow.model.rack import FieldReader
from powerflow.model.site import Site, load_site
from powerflow.site.agent import SiteAgent
from powerflow.site.allocate import Tree, compile_tree
from powerflow.site.broker import Mosquitto
from powerflow.site.messages import PREFIX
from powerflow.site.mqtt import BrokerAddress
from powerflow.site.standin import StandIn, diurnal
from powerflow.tomlfile import read_toml

KINDS = ("lose_feed", "restore_feed", "surge", "broker_restart", "partition", "heal",
         "kill_active")
OUTCOMES = ("breaker_violations", "priority_inversions", "lease_violations", "max_failover_s",
            "max_reaction_periods", "stranded_w_mean")
SAMPLES_PER_PERIOD = 5
MONITOR = "feed-monitor"  # the user that publishes feed states (a controller-class user)


class SiteScenarioError(ValueError):
    pass


@dataclass(frozen=True)
class SiteEvent:
    at_s: float
    kind: str
    feed: str | None = None
    rack: str | None = None
    factor: float = 2.0


@dataclass(frozen=True)
class SiteScenario:
    path: str
    site: Site
    duration_s: float
    period_s: float
    controllers: int
    load: tuple[float, float, float]
    events: tuple[SiteEvent, ...]
    expect: dict[str, float] = field(default_factory=dict)


def load_site_scenario(path: str | Path) -> SiteScenario:
    p = Path(path)
    raw = read_toml(p, SiteScenarioError)
    for key in raw:
        if key not in ("scenario", "event", "expect"):
            raise SiteScenarioError(f"{p}: unknown section [{key}]")
    r = FieldReader(str(p), "[scenario]", raw.get("scenario", {}), SiteScenarioError)
    site_file = r.text("site")
    try:
        site = load_site(p.parent / site_file)
    except ValueError as e:
        raise SiteScenarioError(f"{p}: [scenario]: field 'site': {e}") from None
    duration = r.num("duration_s", 1.0, 3600.0)
    period = r.num("period_s", 0.1, 10.0, 0.5)
    ctrls = r.int_("controllers", 1, 2, 1)
    load = r.get("load", [0.8, 0.15, 20.0])
    if (not isinstance(load, list) or len(load) != 3
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in load)
            or not (0 <= load[0] <= 1 and 0 <= load[1] <= 1 and load[2] > 0)):
        raise r.err("load", "[level 0..1, swing 0..1, cycle_s > 0]", load)
    r.done()
    events = []
    racks = {k.id for k in site.racks}
    feeds = {f.id for f in site.feeds}
    ev_raw = raw.get("event", [])
    if not isinstance(ev_raw, list):
        raise SiteScenarioError(f"{p}: event: expected [[event]] entries")
    for i, ent in enumerate(ev_raw):
        if not isinstance(ent, dict):
            raise SiteScenarioError(f"{p}: [[event]] #{i + 1}: expected a table")
        er = FieldReader(str(p), f"[[event]] #{i + 1}", ent, SiteScenarioError)
        at = er.num("at_s", 0.0, duration)
        kind = er.text("kind", choices=KINDS)
        feed = rack = None
        factor = 2.0
        if kind in ("lose_feed", "restore_feed"):
            feed = er.text("feed")
            if feed not in feeds:
                raise er.err("feed", f"a feed of the site ({', '.join(sorted(feeds))})", feed)
        if kind in ("surge", "partition", "heal"):
            rack = er.text("rack")
            if rack not in racks:
                raise er.err("rack", "a rack of the site", rack)
        if kind == "surge":
            factor = er.num("factor", 0.0, 10.0, 2.0)
        if kind == "kill_active" and ctrls < 2:
            raise er.err("kind", "kill_active with controllers = 2 (a standby to take over)",
                         kind)
        er.done()
        events.append(SiteEvent(at, kind, feed, rack, factor))
    er2 = FieldReader(str(p), "[expect]", raw.get("expect", {}), SiteScenarioError)
    expect = {k: er2.num(k, 0.0, 1e9) for k in OUTCOMES if k in raw.get("expect", {})}
    er2.done()
    return SiteScenario(str(p), site, duration, period, ctrls, (load[0], load[1], load[2]),
                        tuple(sorted(events, key=lambda x: x.at_s)), expect)


def served(st: StandIn, t: float, draw: float) -> dict[int, tuple[float, float, float]]:
    """What each priority gets of a stand-in's draw (W): every minimum first, then the
    demand above it most important first. priority -> (served, min, p95)."""
    wants = st.wants(t)
    left = draw - sum(c.min_w for c in wants.values())
    out = {}
    for p in sorted(wants):
        c = wants[p]
        extra = min(max(c.p95_w - c.min_w, 0.0), max(left, 0.0))
        left -= extra
        out[p] = (c.min_w + extra, c.min_w, c.p95_w)
    return out


@dataclass(frozen=True)
class ExternalBroker:
    """A broker the scenario does not run (`site scenario run --broker`): its URL and a
    folder of `USER.password` files, one for each user the scenario connects as."""

    url: str
    password_dir: Path
    ca: str | None = None

    def password_file(self, user: str) -> Path:
        return self.password_dir / f"{user}.password"

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def check(self, sc: SiteScenario) -> None:
        """Refuse what cannot be done on a broker of someone else's: a restart, and users
        without a password file. SiteScenarioError says which."""
        for ev in sc.events:
            if ev.kind == "broker_restart":
                raise SiteScenarioError(
                    f"{sc.path}: [[event]] at {ev.at_s:g} s: broker_restart needs the "
                    "scenario's own broker (leave out --broker)")
        users = ["site-a"] + (["site-b"] if sc.controllers == 2 else [])
        if any(ev.kind in ("lose_feed", "restore_feed") for ev in sc.events):
            users.append(MONITOR)
        users += [r.client for r in sc.site.racks]
        missing = [u for u in users if not self.password_file(u).is_file()]
        if missing:
            raise SiteScenarioError(
                f"--password-dir {self.password_dir}: no password file for "
                f"{', '.join(missing)} (expected {self.password_file(missing[0]).name})")


class _Run:
    def __init__(self, sc: SiteScenario, workdir: Path,
                 broker: ExternalBroker | None = None) -> None:
        self.sc, self.site = sc, sc.site
        self.lease_s = max(self.site.policy.lease_s * sc.period_s / self.site.policy.period_s,
                           sc.period_s)  # as `site run --period` scales it
        self.external = broker
        self.broker: Mosquitto | ExternalBroker = broker or Mosquitto(
            workdir / "broker", self.site.name, ["site-a", "site-b", MONITOR],
            [r.client for r in self.site.racks])
        lv, sw, cyc = sc.load
        self.standins = [StandIn(r, diurnal(lv, sw, cyc, phase=k))
                         for k, r in enumerate(self.site.racks)]
        self.index = {s.rack.id: k for k, s in enumerate(self.standins)}
        self.workdir = workdir
        self.stop = asyncio.Event()
        self.agents: dict[str, asyncio.Task[None]] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.lost: dict[str, float] = {}
        self.log: list[dict[str, Any]] = []
        self.counts = {k: 0 for k in ("breaker_violations", "priority_inversions",
                                      "lease_violations")}
        self.stranded: list[float] = []
        self.failovers: list[float] = []
        self.kill: tuple[float, str] | None = None
        # surges being watched: (at s, {neighbour index: budget W held at the surge},
        # {neighbour index: when its first different budget arrived, s})
        self.surges: list[tuple[float, dict[int, float], dict[int, float]]] = []
        self.reactions: list[float | None] = []
        self.t0 = 0.0

    def addr(self, user: str) -> BrokerAddress:
        return BrokerAddress.parse(self.broker.url, user, str(self.broker.password_file(user)),
                                   self.external.ca if self.external is not None else None)

    def start_agent(self, s: StandIn) -> None:
        a = SiteAgent(self.addr(s.rack.client), self.site.name, s.rack.client, s.budget,
                      s.demand, self.sc.period_s)
        self.agents[s.rack.id] = asyncio.create_task(a.run(self.stop))

    def start_controller(self, cid: str) -> None:
        self.procs[cid] = subprocess.Popen(
            [sys.executable, "-m", "powerflow.cli", "site", "run", self.site.path,
             "--broker", self.broker.url, "--id", cid,
             "--password-file", str(self.broker.password_file(cid)), "--no-api",
             "--period", str(self.sc.period_s),
             *(["--ca", self.external.ca] if self.external and self.external.ca else [])],
            stdout=(self.workdir / f"{cid}.log").open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True)

    async def publish_feed(self, feed: str, lost: bool) -> None:
        async with self.addr(MONITOR).client(MONITOR) as c:
            await c.publish(f"{PREFIX}/{self.site.name}/feed/{feed}",
                            cbor2.dumps({"lost": lost, "t": time.time()}), qos=1, retain=True)

    async def until(self, cond: Any, what: str, timeout_s: float) -> None:
        for _ in range(int(timeout_s / 0.05)):
            if cond():
                return
            await asyncio.sleep(0.05)
        raise SiteScenarioError(f"scenario could not start: {what} within {timeout_s} s")

    def tree_now(self, now: float) -> tuple[Tree, Any]:
        tree = compile_tree(self.site, frozenset(self.lost))
        limit = tree.limit_w.copy()
        for f in self.site.feeds:
            if f.id in self.lost and f.backup is not None and f.backup not in self.lost:
                b = tree.ids.index(f.backup)
                if now - self.lost[f.id] < tree.overload_s[b]:
                    limit[b] *= 1 + tree.overload_frac[b]
        return tree, limit

    def sample(self, flags: dict[str, bool]) -> None:
        """One look at the site as measured: draws, budgets held, breakers, classes."""
        now = time.time()
        t = now
        draw = np.array([s.draw_w(t) for s in self.standins])
        held = np.array([s.budget.limit_w(now) for s in self.standins])
        want = np.array([sum(c.p95_w for c in s.wants(t).values()) for s in self.standins])
        tree, limit = self.tree_now(now)
        load = tree.under(draw)
        if np.any(load > limit + 1e-6):
            flags["breaker_violations"] = True
        if np.any(draw > held + 1e-6):
            flags["lease_violations"] = True
        # priority inversions under a constrained node (its budgets fill it)
        slack = self.site.policy.hysteresis_w
        budgets = tree.under(held)
        under_n = tree.member.sum(axis=1)
        full = budgets >= limit - slack * under_n - 1.0
        sv = [served(s, t, draw[k]) for k, s in enumerate(self.standins)]
        for n in np.flatnonzero(full):
            racks = np.flatnonzero(tree.member[n])
            held_cls = [(self.site.class_of(p), k) for k in racks for p, (g, _lo, hi)
                        in sv[k].items() if g < hi - 1.0]
            above = [self.site.class_of(p) for k in racks for p, (g, lo, _hi)
                     in sv[k].items() if g > lo + 1.0]
            if held_cls and above and min(c for c, _ in held_cls) < max(above):
                flags["priority_inversions"] = True
                break
        # stranded: unmet demand that unused budget under the same root could have met
        stranded = 0.0
        for root in tree.by_depth[0]:
            rk = np.flatnonzero(tree.member[root])
            unmet = float(np.maximum(want[rk] - draw[rk], 0.0).sum())
            unused = float(np.maximum(held[rk] - draw[rk], 0.0).sum())
            stranded += min(unmet, unused)
        flags["_stranded"] = flags.get("_stranded", 0.0) + stranded  # type: ignore[assignment]
        if self.kill is not None:
            t_kill, killed = self.kill
            if all(s.budget.valid(now) and s.budget.controller not in ("", killed)
                   for s in self.standins):
                self.failovers.append(now - t_kill)
                self.kill = None

    async def event(self, ev: SiteEvent) -> None:
        now = time.time()
        self.log.append({"at_s": round(now - self.t0, 2), "kind": ev.kind, "feed": ev.feed,
                         "rack": ev.rack})
        if ev.kind == "lose_feed":
            assert ev.feed is not None
            self.lost[ev.feed] = now
            await self.publish_feed(ev.feed, True)
        elif ev.kind == "restore_feed":
            assert ev.feed is not None
            self.lost.pop(ev.feed, None)
            await self.publish_feed(ev.feed, False)
        elif ev.kind == "surge":
            k = self.index[ev.rack or ""]
            self.standins[k].surge = ev.factor
            parent = self.standins[k].rack.parent
            near = [j for j, s in enumerate(self.standins)
                    if s.rack.parent == parent and j != k] or [k]
            self.surges.append((now, {j: self._granted(j) for j in near}, {}))
        elif ev.kind == "broker_restart":
            assert isinstance(self.broker, Mosquitto)  # refused with an external broker
            self.broker.stop()
            self.broker.start()
        elif ev.kind == "partition":
            task = self.agents.pop(ev.rack or "", None)
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        elif ev.kind == "heal":
            if ev.rack not in self.agents:
                self.start_agent(self.standins[self.index[ev.rack or ""]])
        elif ev.kind == "kill_active":
            counts: dict[str, int] = {}
            for s in self.standins:
                counts[s.budget.controller] = counts.get(s.budget.controller, 0) + 1
            active = max(counts, key=lambda c: counts[c])
            proc = self.procs.get(active)
            if proc is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                self.kill = (time.time(), active)

    def _granted(self, k: int) -> float:
        lease = self.standins[k].budget.lease
        return float("nan") if lease is None else lease.budget_w

    def watch_reactions(self) -> None:
        """Note each neighbour's first budget that moved since its surge (by its arrival
        time: a lease arrives lease_s before it expires)."""
        for _at, before, moved in self.surges:
            for j, w in before.items():
                lease = self.standins[j].budget.lease
                if (j not in moved and lease is not None
                        and not abs(lease.budget_w - w) <= self.site.policy.hysteresis_w):
                    moved[j] = lease.expires_at - self.lease_s

    async def run(self) -> dict[str, Any]:
        self.broker.start()
        try:
            for s in self.standins:
                self.start_agent(s)
            self.start_controller("site-a")
            await self.until(lambda: all(s.budget.valid(time.time()) for s in self.standins),
                             "every rack holding a lease", 30.0)
            if self.sc.controllers == 2:
                self.start_controller("site-b")
            self.t0 = time.time()
            pending = list(self.sc.events)
            period = self.sc.period_s
            n_periods = int(round(self.sc.duration_s / period))
            for k in range(n_periods):
                flags: dict[str, Any] = {}
                for j in range(SAMPLES_PER_PERIOD):
                    while pending and time.time() - self.t0 >= pending[0].at_s:
                        await self.event(pending.pop(0))
                    self.sample(flags)
                    self.watch_reactions()
                    target = self.t0 + k * period + (j + 1) * period / SAMPLES_PER_PERIOD
                    await asyncio.sleep(max(target - time.time(), 0.0))
                for name in self.counts:
                    if flags.get(name):
                        self.counts[name] += 1
                self.stranded.append(flags.get("_stranded", 0.0) / SAMPLES_PER_PERIOD)
            return self.result(n_periods)
        finally:
            self.stop.set()
            for task in self.agents.values():
                task.cancel()
            await asyncio.gather(*self.agents.values(), return_exceptions=True)
            for proc in self.procs.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in self.procs.values():
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            self.broker.close()

    def result(self, n_periods: int) -> dict[str, Any]:
        outcomes: dict[str, Any] = dict(self.counts)
        if self.kill is not None:  # killed, and never taken over within the run
            outcomes["max_failover_s"] = None
        else:
            outcomes["max_failover_s"] = (round(max(self.failovers), 3) if self.failovers
                                          else 0.0)
        reactions: list[float | None] = [
            max(moved.values()) - at if len(moved) == len(before) else None
            for at, before, moved in self.surges]
        if not reactions:
            outcomes["max_reaction_s"] = outcomes["max_reaction_periods"] = 0.0
        elif any(r is None for r in reactions):
            outcomes["max_reaction_s"] = outcomes["max_reaction_periods"] = None
        else:
            worst = max(r for r in reactions if r is not None)
            outcomes["max_reaction_s"] = round(worst, 3)
            outcomes["max_reaction_periods"] = round(worst / self.sc.period_s, 2)
        outcomes["reactions_s"] = [None if r is None else round(r, 3) for r in reactions]
        outcomes["stranded_w_mean"] = round(float(np.mean(self.stranded)), 1)
        verdict = {}
        for k, lim in self.sc.expect.items():
            got = outcomes[k]
            verdict[k] = {"at_most": lim, "measured": got, "ok": got is not None and got <= lim}
        return {"scenario": self.sc.path, "site": self.site.name, "periods": n_periods,
                "period_s": self.sc.period_s, **outcomes, "events": self.log,
                "expect": verdict, "passed": all(v["ok"] for v in verdict.values())}


def run_site_scenario(sc: SiteScenario, workdir: Path,
                      broker: ExternalBroker | None = None) -> dict[str, Any]:
    """Run `sc` on `broker`, or on a Mosquitto of its own (files under `workdir`); the
    outcomes."""
    if broker is not None:
        broker.check(sc)
    return asyncio.run(_Run(sc, workdir, broker).run())
