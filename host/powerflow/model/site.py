"""Site description files (TOML): the power tree above the racks and the site's policy.

A site is a tree of breakers (switchboards, PDUs, RPPs) under one or more feeds, with the
racks at its leaves. `load_site` checks everything and names the file, the entry and the
field of anything wrong, with what was expected.

    [site]      name, period_s (s, default 2), lease_s (s, default 3 periods),
                hysteresis_w (W, default 0), redistribute = "headroom" | "none"
                (what happens to budget no rack's demand needs: lent to the racks as
                headroom up to their own feed limits, or held back at the breakers)
    [[class]]   name, priorities = [rack device priorities, 1 = most important]: the site's
                priority classes, most important first; every priority 1..10 in one class
                (default: one class per priority)
    [[feed]]    id, limit_w (W), overload_frac (short-time allowance above the limit, e.g.
                0.25), overload_s (s it may last), backup (the feed that carries this one's
                load when it is lost: an automatic transfer)
    [[breaker]] id, parent (a feed or breaker), limit_w, overload_frac, overload_s
    [[rack]]    id, parent, client (the rack controller's identity on the broker: its MQTT
                client id and user name), feed_limit_w (W, its own breaker), floor_w (W it
                is always allowed), rack (optional: its rack file, relative to the site
                file; `site run --emulate` runs such a rack emulated under its own rack
                controller, a rack without one as a stand-in of the site protocol)

Power is measured at the racks' feeds (W, positive drawn). The floors under every feed and
breaker must fit its continuous limit, so the site can always grant them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from powerflow.model.rack import FieldReader
from powerflow.tomlfile import read_toml

PRIORITIES = tuple(range(1, 11))  # rack device priorities (1 = most important)
# a client id is also an MQTT user name and a topic level: no wildcards, separators or spaces
CLIENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class SiteError(ValueError):
    """A site file that cannot be used; the message names file, entry and field."""


@dataclass(frozen=True)
class SitePolicy:
    period_s: float = 2.0
    lease_s: float = 6.0
    hysteresis_w: float = 0.0
    redistribute: str = "headroom"


@dataclass(frozen=True)
class SiteClass:
    name: str
    priorities: tuple[int, ...]


@dataclass(frozen=True)
class Feed:
    id: str
    limit_w: float
    overload_frac: float = 0.0
    overload_s: float = 0.0
    backup: str | None = None


@dataclass(frozen=True)
class Breaker:
    id: str
    parent: str
    limit_w: float
    overload_frac: float = 0.0
    overload_s: float = 0.0


@dataclass(frozen=True)
class SiteRack:
    id: str
    parent: str
    client: str
    feed_limit_w: float
    floor_w: float = 0.0
    rack_file: str | None = None  # its rack file (a path as given, resolved from the site's)


@dataclass(frozen=True)
class Site:
    name: str
    policy: SitePolicy
    classes: tuple[SiteClass, ...]
    feeds: tuple[Feed, ...]
    breakers: tuple[Breaker, ...]
    racks: tuple[SiteRack, ...]
    path: str = ""

    def class_of(self, priority: int) -> int:
        """Index in `classes` of the class holding rack priority `priority`."""
        for k, c in enumerate(self.classes):
            if priority in c.priorities:
                return k
        raise KeyError(priority)

    def rack(self, rack_id: str) -> SiteRack:
        for r in self.racks:
            if r.id == rack_id:
                return r
        raise KeyError(rack_id)


def load_site(path: str | Path) -> Site:
    return parse_site(read_toml(path, SiteError), str(path))


def _entries(raw: dict[str, Any], key: str, path: str) -> list[dict[str, Any]]:
    v = raw.get(key, [])
    if not isinstance(v, list) or not all(isinstance(e, dict) for e in v):
        raise SiteError(f"{path}: {key}: expected an array of tables ([[{key}]] entries)")
    return v


def parse_site(raw: dict[str, Any], path: str = "<site>") -> Site:
    for key in raw:
        if key not in ("site", "class", "feed", "breaker", "rack"):
            raise SiteError(f"{path}: unknown section [{key}]")
    if not isinstance(raw.get("site", {}), dict):
        raise SiteError(f"{path}: [site]: expected a table ([site] with its fields)")
    s = FieldReader(path, "[site]", raw.get("site", {}), SiteError)
    name = s.ident("name", Path(path).stem if CLIENT_RE.fullmatch(Path(path).stem) else "site")
    if not CLIENT_RE.fullmatch(name):
        raise s.err("name", "letters, digits and . _ - (it is a topic level)", name)
    period = s.num("period_s", 0.1, 3600.0, 2.0)
    policy = SitePolicy(period_s=period,
                        lease_s=s.num("lease_s", period, 100 * period, 3 * period),
                        hysteresis_w=s.num("hysteresis_w", 0.0, 1e9, 0.0),
                        redistribute=s.text("redistribute", "headroom", ("headroom", "none")))
    s.done()
    classes: list[SiteClass] = []
    seen: dict[int, str] = {}
    for i, c in enumerate(_entries(raw, "class", path)):
        r = FieldReader(path, f"[[class]] #{i + 1}", c, SiteError)
        cname = r.ident("name")
        pr = r.get("priorities")
        if (not isinstance(pr, list) or not pr
                or not all(isinstance(p, int) and not isinstance(p, bool) and p in PRIORITIES
                           for p in pr)):
            raise r.err("priorities", "a list of rack priorities from 1 to 10", pr)
        for p in pr:
            if p in seen:
                raise r.err("priorities", f"priorities in one class only ({p} is in class "
                                          f"{seen[p]!r})", pr)
            seen[p] = cname
        if any(cname == k.name for k in classes):
            raise r.err("name", "a class name not used before", cname)
        r.done()
        classes.append(SiteClass(cname, tuple(sorted(pr))))
    if classes:
        missing = [p for p in PRIORITIES if p not in seen]
        if missing:
            raise SiteError(f"{path}: [[class]]: rack priorities {missing} are in no class "
                            "(every priority 1..10 must be in one)")
        # most important first: classes must not interleave priorities
        order = [min(c.priorities) for c in classes]
        if order != sorted(order):
            raise SiteError(f"{path}: [[class]]: classes must be listed most important first "
                            f"(their lowest priorities are {order})")
    else:
        classes = [SiteClass(f"p{p}", (p,)) for p in PRIORITIES]

    ids: dict[str, str] = {}  # id -> kind

    def new_id(r: FieldReader, kind: str) -> str:
        v = r.ident("id")
        if v in ids:
            raise r.err("id", f"an id not used before (a {ids[v]} has it)", v)
        ids[v] = kind
        return v

    def overload(r: FieldReader) -> tuple[float, float]:
        frac = r.num("overload_frac", 0.0, 10.0, 0.0)
        secs = r.num("overload_s", 0.0, 86400.0, 0.0)
        if (frac > 0) != (secs > 0):
            raise r.err("overload_s" if frac > 0 else "overload_frac",
                        "an overload allowance given with its duration (both or neither)",
                        secs if frac > 0 else frac)
        return frac, secs

    feeds: list[Feed] = []
    for i, f in enumerate(_entries(raw, "feed", path)):
        r = FieldReader(path, f"[[feed]] #{i + 1}", f, SiteError)
        fid = new_id(r, "feed")
        lim = r.num("limit_w", 1.0, 1e10)
        frac, secs = overload(r)
        backup = r.get("backup", None)
        if backup is not None and not isinstance(backup, str):
            raise r.err("backup", "a feed id", backup)
        r.done()
        feeds.append(Feed(fid, lim, frac, secs, backup))
    if not feeds:
        raise SiteError(f"{path}: no [[feed]]: a site needs at least one feed")
    for i, fd in enumerate(feeds):
        if fd.backup is not None and (ids.get(fd.backup) != "feed" or fd.backup == fd.id):
            raise SiteError(f"{path}: [[feed]] #{i + 1}: field 'backup': expected another "
                            f"feed's id; got {fd.backup!r}")

    breakers: list[Breaker] = []
    raw_br = _entries(raw, "breaker", path)
    readers = [FieldReader(path, f"[[breaker]] #{i + 1}", b, SiteError)
               for i, b in enumerate(raw_br)]
    for r in readers:
        bid = new_id(r, "breaker")
        parent = r.ident("parent")
        lim = r.num("limit_w", 1.0, 1e10)
        frac, secs = overload(r)
        r.done()
        breakers.append(Breaker(bid, parent, lim, frac, secs))
    for r, b in zip(readers, breakers, strict=True):
        if ids.get(b.parent) not in ("feed", "breaker"):
            raise r.err("parent", "the id of a feed or a breaker", b.parent)
    # no cycles: every breaker reaches a feed
    parent_of = {b.id: b.parent for b in breakers}
    for r, b in zip(readers, breakers, strict=True):
        seen_ids, n = {b.id}, b.parent
        while n in parent_of:
            if n in seen_ids:
                raise r.err("parent", "a tree (this breaker is its own ancestor)", b.parent)
            seen_ids.add(n)
            n = parent_of[n]

    racks: list[SiteRack] = []
    clients: set[str] = set()
    for i, k in enumerate(_entries(raw, "rack", path)):
        r = FieldReader(path, f"[[rack]] #{i + 1}", k, SiteError)
        rid = new_id(r, "rack")
        parent = r.ident("parent")
        if ids.get(parent) not in ("feed", "breaker"):
            raise r.err("parent", "the id of a feed or a breaker", parent)
        client = r.text("client", rid)
        if not CLIENT_RE.fullmatch(client):
            raise r.err("client", "letters, digits and . _ - (an MQTT client id, at most 64)",
                        client)
        if client in clients:
            raise r.err("client", "a client id not used by another rack", client)
        clients.add(client)
        lim = r.num("feed_limit_w", 1.0, 1e9)
        floor = r.num("floor_w", 0.0, lim, 0.0)
        rack_file = None
        if "rack" in k:
            given = r.text("rack")
            rack_file = str(Path(path).parent / given) if path else given
            if not Path(rack_file).is_file():
                raise r.err("rack", "a rack file (relative to the site file)", given)
        r.done()
        racks.append(SiteRack(rid, parent, client, lim, floor, rack_file))
    if not racks:
        raise SiteError(f"{path}: no [[rack]]: a site needs at least one rack")

    site = Site(name, policy, tuple(classes), tuple(feeds), tuple(breakers), tuple(racks), path)
    _check_floors(site)
    return site


def ancestors(site: Site, node: str) -> list[str]:
    """The feeds and breakers above `node` (a rack or breaker id), nearest first."""
    parent = {b.id: b.parent for b in site.breakers} | {r.id: r.parent for r in site.racks}
    out = []
    while node in parent:
        node = parent[node]
        out.append(node)
    return out


def _check_floors(site: Site) -> None:
    """The floors must fit every feed's and breaker's continuous limit, and a feed's backup
    must be able to carry both feeds' floors once its overload allowance has run out."""
    floor_under: dict[str, float] = {}
    for r in site.racks:
        for a in ancestors(site, r.id):
            floor_under[a] = floor_under.get(a, 0.0) + r.floor_w
    limits = {f.id: ("feed", f.limit_w) for f in site.feeds}
    limits |= {b.id: ("breaker", b.limit_w) for b in site.breakers}
    for nid, (kind, lim) in limits.items():
        if floor_under.get(nid, 0.0) > lim:
            raise SiteError(f"{site.path}: {kind} {nid!r}: the floors of the racks under it "
                            f"add up to {floor_under[nid]:.0f} W, above its limit {lim:.0f} W")
    for f in site.feeds:
        if f.backup is not None:
            b = next(x for x in site.feeds if x.id == f.backup)
            both = floor_under.get(f.id, 0.0) + floor_under.get(b.id, 0.0)
            if both > b.limit_w:
                raise SiteError(f"{site.path}: feed {f.id!r}: its backup {b.id!r} cannot carry "
                                f"both feeds' floors ({both:.0f} W, its limit "
                                f"{b.limit_w:.0f} W) if it is lost")
