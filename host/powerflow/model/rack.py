"""Rack description files (TOML): the feed, the converter nodes, the power mesh and the
devices on it. One format for the emulated rack, the host controller and the power-flow
engine. `load_rack` checks everything and names the file, the entry and the field of
anything wrong, with what was expected.

    [rack]      name, bus_voltage (V)
    [feed]      voltage (V), breaker_limit_w (W); under a site controller floor_w and
                safe_budget_w (W, see `Rack`)
    [[segment]] id
    [[node]]    id, segment, link, rating_w, vout_max, iout_max, vout_min (V), r_out (ohm),
                efficiency = [[load fraction, efficiency], ...], position = [slot, height], key
    [[branch]]  id, from, to, r (ohm), switch = "none" | "tie", closed (normal state),
                port = [node id, port index] (the node port that operates the tie)
    [[device]]  id, segment, priority (1 = most important), p_min_w, p_max_w, p_nom_w,
                trace, utilisation (gpu | cpu); on a real rack optionally exporter (a
                Prometheus /metrics URL), exporter_kind (dcgm | node), gpu (index)
    [battery]   segment, capacity_wh, p_charge_max_w, p_discharge_max_w, efficiency, soc
    [policy]    the allocator's policy (checked and built by powerflow.control.policy)
    [profile.NAME]  named overrides of [policy], selectable at run time
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from powerflow.tomlfile import read_toml


class RackError(ValueError):
    """An invalid rack file; the message names the file, the entry and the field."""


# the most a droop-centred safe output sits above nominal at no load: a soft-start into an
# unloaded bus may run 1/64 (1.6 %) over its reference (pfnode/control.py), and the two
# together stay under a +3 % band's top
SAFE_RISE_PU = 0.014


@dataclass(frozen=True)
class Node:
    id: int
    segment: str
    link: str
    rating_w: float
    vout_max: float
    iout_max: float
    r_out: float  # ohm: output (droop) resistance
    efficiency: tuple[tuple[float, float], ...]
    position: tuple[int, int] = (0, 0)
    key: str | None = None
    vout_min: float = 1.0  # V: the lowest regulated output; below it the output is off

    def safe_vout(self, bus_voltage: float, droop: bool = True) -> float:
        """V the node runs at when nothing plans it (its failsafe, a host's safe allocation,
        the take-over after either), with its droop (`droop`: r_out, V per A): centred, so
        the bus is at `bus_voltage` at half its rated current, above it lighter and below
        it heavier — by at most SAFE_RISE_PU above, so that at no load it stays under a
        +3 % band's top. At plain `bus_voltage`, the small rack carrying 1.7 kW sat at
        11.55 V, under its 11.64-V band, in failsafe and in safe mode alike (measured)."""
        rise = min(0.5 * self.r_out * self.iout_max, SAFE_RISE_PU * bus_voltage) if droop else 0.0
        return min(bus_voltage + rise, self.vout_max)


@dataclass(frozen=True)
class Branch:
    id: str
    from_: str
    to: str
    r: float  # ohm
    switch: str  # "none" or "tie"
    closed: bool
    port: tuple[int, int] | None = None  # (node id, port index) operating the tie


@dataclass(frozen=True)
class Device:
    id: str
    segment: str
    priority: int
    p_min_w: float
    p_max_w: float
    p_nom_w: float
    trace: str = "steady"
    utilisation: str = "gpu"
    exporter: str | None = None  # Prometheus /metrics URL to scrape (real racks)
    exporter_kind: str = "dcgm"  # dcgm (dcgm-exporter) | node (node_exporter)
    gpu: str = "0"  # the GPU's `gpu` label on a dcgm-exporter


@dataclass(frozen=True)
class Battery:
    segment: str
    capacity_wh: float
    p_charge_max_w: float
    p_discharge_max_w: float
    efficiency: float
    soc: float


@dataclass(frozen=True)
class Rack:
    name: str
    bus_voltage: float
    feed_voltage: float
    breaker_limit_w: float
    segments: tuple[str, ...]
    nodes: tuple[Node, ...]
    branches: tuple[Branch, ...]
    devices: tuple[Device, ...]
    battery: Battery | None = None
    path: str = ""
    # the [policy] and [profile.NAME] tables as written: the allocation policy is control's
    # to check and build (control.policy.rack_policy), not the rack description's
    policy_table: dict[str, Any] = field(default_factory=dict)
    profile_tables: dict[str, Any] = field(default_factory=dict)
    # Under a site controller (`run --site`): the feed power the rack is always allowed (W; a
    # budget below it is clamped up) and the budget it falls to when its lease runs out or the
    # broker is lost (W; never above the last budget granted, never below the floor).
    floor_w: float = 0.0
    safe_budget_w: float = 0.0


# A bus below this fraction of its nominal voltage feeds its devices less than they ask (a
# brownout): the line the supervisor, the scenario verdicts and Redfish health all judge by.
BROWNOUT_V_PU = 0.95


# ids of segments, branches and devices appear in URLs (Redfish), metric labels and logs:
# letters, digits and . _ : - only, starting with a letter or digit
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
ID_RULE = "an id of letters, digits and . _ : - (starting with a letter or digit, at most 64)"


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _table(raw: Any, key: str, path: str) -> dict[str, Any]:
    v = raw.get(key, {})
    if not isinstance(v, dict):
        raise RackError(f"{path}: [{key}]: expected a table ([{key}] with its fields)")
    return v


def _entries(raw: dict[str, Any], key: str, path: str) -> list[dict[str, Any]]:
    v = raw.get(key, [])
    if not isinstance(v, list):
        raise RackError(f"{path}: {key}: expected an array of tables ([[{key}]] entries)")
    for i, e in enumerate(v):
        if not isinstance(e, dict):
            raise RackError(f"{path}: [[{key}]] #{i + 1}: expected a table of fields; got {e!r}")
    return v


class FieldReader:
    """The fields of one table of a description file, checked one by one; errors name the
    file, the entry (`where`) and the field, raised as `error` (rack files: RackError)."""

    def __init__(self, path: str, where: str, data: dict[str, Any],
                 error: type[ValueError] = RackError) -> None:
        self.path, self.where, self.data, self.error = path, where, data, error
        self.used: set[str] = set()

    def err(self, key: str, expected: str, got: Any = None) -> ValueError:
        tail = f"; got {got!r}" if got is not None else ""
        return self.error(f"{self.path}: {self.where}: field '{key}': expected {expected}{tail}")

    def get(self, key: str, default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise self.error(f"{self.path}: {self.where}: field '{key}' is missing")
            return default
        return self.data[key]

    def num(self, key: str, lo: float, hi: float, default: Any = ...) -> float:
        v = self.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise self.err(key, f"a number from {lo} to {hi}", v)
        return float(v)

    def int_(self, key: str, lo: int, hi: int, default: Any = ...) -> int:
        v = self.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self.err(key, f"a whole number from {lo} to {hi}", v)
        return v

    def text(self, key: str, default: Any = ..., choices: tuple[str, ...] | None = None) -> str:
        v = self.get(key, default)
        if not isinstance(v, str) or (choices and v not in choices):
            raise self.err(key, f"one of {', '.join(choices)}" if choices else "text", v)
        return v

    def ident(self, key: str, default: Any = ...) -> str:
        v = self.get(key, default)
        if not isinstance(v, str) or not ID_RE.fullmatch(v):
            raise self.err(key, ID_RULE, v)
        return v

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.error(f"{self.path}: {self.where}: unknown field '{unknown[0]}'")


def load_rack(path: str | Path) -> Rack:
    return parse_rack(read_toml(path, RackError), str(path))


def _link_ok(link: str) -> bool:
    """pty, tcp (emulated), serial:DEVICE or tcp:HOST:PORT with something real after."""
    if link in ("pty", "tcp"):
        return True
    if link.startswith("serial:"):
        return len(link) > 7 and not link[7:].isspace()
    if link.startswith("tcp:"):
        host, _, port = link[4:].rpartition(":")
        return bool(host) and port.isdigit() and 1 <= int(port) <= 65535
    return False


def _fed(segs: list[str], nodes: list[Node], branches: list[Branch]) -> set[str]:
    """Segments a converter can reach through the mesh (any branch, ties closed or not)."""
    fed = {n.segment for n in nodes}
    grew = True
    while grew:
        grew = False
        for b in branches:
            if (b.from_ in fed) != (b.to in fed):
                fed |= {b.from_, b.to}
                grew = True
    return fed


def parse_rack(raw: dict[str, Any], path: str = "<rack>") -> Rack:
    for key in raw:
        if key not in ("rack", "feed", "segment", "node", "branch", "device", "battery", "policy",
                       "profile"):
            raise RackError(f"{path}: unknown section [{key}]")
    for key in ("rack", "feed", "battery", "policy", "profile"):
        _table(raw, key, path)
    for key in ("segment", "node", "branch", "device"):
        _entries(raw, key, path)
    for name, over in raw.get("profile", {}).items():
        if not isinstance(over, dict):
            raise RackError(f"{path}: [profile.{name}]: expected a table of policy fields")
    rk = FieldReader(path, "[rack]", raw.get("rack", {}))
    name = rk.text("name", Path(path).stem)
    bus_v = rk.num("bus_voltage", 1.0, 60.0)
    rk.done()
    fd = FieldReader(path, "[feed]", raw.get("feed", {}))
    feed_v = fd.num("voltage", 1.0, 1000.0)
    breaker = fd.num("breaker_limit_w", 1.0, 1e7)
    floor = fd.num("floor_w", 0.0, breaker, 0.0)
    safe_budget = fd.num("safe_budget_w", floor, breaker, floor)
    fd.done()
    segs = []
    for i, s in enumerate(raw.get("segment", [])):
        r = FieldReader(path, f"[[segment]] #{i + 1}", s)
        sid = r.ident("id")
        if sid in segs:
            raise r.err("id", "a segment id not used before", sid)
        segs.append(sid)
        r.done()
    if not segs:
        raise RackError(f"{path}: no [[segment]]: a rack needs at least one bus segment")

    def seg(r: FieldReader, key: str = "segment") -> str:
        v = r.text(key)
        if v not in segs:
            raise r.err(key, f"one of the segment ids {', '.join(segs)}", v)
        return v

    nodes: list[Node] = []
    for i, n in enumerate(raw.get("node", [])):
        r = FieldReader(path, f"[[node]] #{i + 1}", n)
        nid = r.int_("id", 1, 0xFFFE)
        if any(x.id == nid for x in nodes):
            raise r.err("id", "a node id not used before", nid)
        eff = r.get("efficiency", [[0.1, 0.91], [0.5, 0.965], [1.0, 0.957]])
        if (not isinstance(eff, list) or len(eff) < 2 or any(
                not isinstance(e, list) or len(e) != 2 or not all(_number(v) for v in e)
                or not (0 < e[0] <= 1.5 and 0.5 < e[1] <= 1) for e in eff)
                or any(eff[k][0] >= eff[k + 1][0] for k in range(len(eff) - 1))):
            raise r.err("efficiency", "[[load fraction, efficiency], ...] with rising fractions in "
                        "(0, 1.5] and efficiencies in (0.5, 1]", eff)
        pos = r.get("position", [0, 0])
        if not (isinstance(pos, list) and len(pos) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in pos)):
            raise r.err("position", "[slot, height] as whole numbers", pos)
        key = r.get("key", None)
        if key is not None and (not isinstance(key, str) or len(key) < 32 or any(
                c not in "0123456789abcdefABCDEF" for c in key) or len(key) % 2):
            raise r.err("key", "at least 32 hex digits")
        link = r.text("link", "pty")
        if not _link_ok(link):
            raise r.err("link", "pty, tcp, serial:DEVICE or tcp:HOST:PORT (port 1..65535)",
                        link)
        vmax = r.num("vout_max", 1.0, 60.0)
        if vmax < bus_v:
            raise r.err("vout_max", f"at least the bus voltage ({bus_v:g} V): a converter "
                        "rated below the bus cannot feed it", vmax)
        imax = r.num("iout_max", 0.1, 1000.0)
        rating = r.num("rating_w", 1.0, 1e6)
        if rating > vmax * imax * (1 + 1e-9):
            raise r.err("rating_w", f"at most vout_max x iout_max = {vmax * imax:g} W", rating)
        vmin = r.num("vout_min", 0.0, vmax, min(1.0, vmax))
        if vmin >= bus_v:
            raise r.err("vout_min", f"below the bus voltage ({bus_v:g} V)", vmin)
        nodes.append(Node(nid, seg(r), link, rating, vmax, imax,
                          r.num("r_out", 0.0, 1.0, 0.004), tuple(tuple(e) for e in eff),
                          (pos[0], pos[1]), key, vmin))
        r.done()
    if not nodes:
        raise RackError(f"{path}: no [[node]]: a rack needs at least one converter node")
    branches: list[Branch] = []
    for i, b in enumerate(raw.get("branch", [])):
        r = FieldReader(path, f"[[branch]] #{i + 1}", b)
        bid = r.ident("id", f"b{i + 1}")
        if any(x.id == bid for x in branches):
            raise r.err("id", "a branch id not used before", bid)
        f, t = seg(r, "from"), seg(r, "to")
        if f == t:
            raise r.err("to", "a segment other than 'from'", t)
        sw = r.text("switch", "none", ("none", "tie"))
        closed = r.get("closed", True)
        if not isinstance(closed, bool):
            raise r.err("closed", "true or false", closed)
        if sw == "none" and not closed:
            raise r.err("closed", "true for a branch without a switch", closed)
        port = r.get("port", None)
        if port is not None:
            if (sw != "tie" or not isinstance(port, list) or len(port) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in port)):
                raise r.err("port", "[node id, port index] on a branch with switch = \"tie\"", port)
            owner = next((n for n in nodes if n.id == port[0]), None)
            if owner is None or owner.segment not in (f, t) or not 0 <= port[1] < 8:
                raise r.err("port", "a node on one of the branch's segments and a port 0..7", port)
            if any(x.port == (port[0], port[1]) for x in branches):
                raise r.err("port", "a node port not already operating another tie", port)
            port = (port[0], port[1])
        branches.append(Branch(bid, f, t, r.num("r", 1e-7, 10.0), sw, closed, port))
        r.done()
    devices: list[Device] = []
    for i, dv in enumerate(raw.get("device", [])):
        r = FieldReader(path, f"[[device]] #{i + 1}", dv)
        did = r.ident("id")
        if any(x.id == did for x in devices):
            raise r.err("id", "a device id not used before", did)
        pmin, pmax = r.num("p_min_w", 0.0, 1e6), r.num("p_max_w", 0.0, 1e6)
        if pmin > pmax:
            raise r.err("p_min_w", f"at most p_max_w ({pmax})", pmin)
        pnom = r.num("p_nom_w", pmin, pmax, pmax)
        util = r.text("utilisation", "gpu", ("gpu", "cpu"))
        exporter = r.get("exporter", None)
        if exporter is not None and (not isinstance(exporter, str)
                                     or not exporter.startswith(("http://", "https://"))):
            raise r.err("exporter", "the exporter's metrics URL, http://HOST:PORT/metrics",
                        exporter)
        devices.append(Device(did, seg(r), r.int_("priority", 1, 10), pmin, pmax, pnom,
                              r.text("trace", "steady", ("steady", "diurnal", "training",
                                                          "inference", "spikes")),
                              util, exporter,
                              r.text("exporter_kind", "dcgm" if util == "gpu" else "node",
                                     ("dcgm", "node")),
                              str(r.int_("gpu", 0, 63, 0))))
        r.done()
    battery = None
    if "battery" in raw:
        r = FieldReader(path, "[battery]", raw["battery"])
        battery = Battery(seg(r), r.num("capacity_wh", 1.0, 1e7), r.num("p_charge_max_w", 0.0, 1e7),
                          r.num("p_discharge_max_w", 0.0, 1e7), r.num("efficiency", 0.5, 1.0, 0.95),
                          r.num("soc", 0.0, 1.0, 0.5))
        r.done()
    fed = _fed(segs, nodes, branches)
    for dv in devices:
        if dv.segment not in fed:
            raise RackError(f"{path}: device {dv.id!r}: segment {dv.segment!r} has no "
                            "converter and no branch to one: nothing could supply it")
    if battery is not None and battery.segment not in fed:
        raise RackError(f"{path}: [battery]: segment {battery.segment!r} has no converter "
                        "and no branch to one")
    return Rack(name=name, bus_voltage=bus_v, feed_voltage=feed_v, breaker_limit_w=breaker,
                segments=tuple(segs), nodes=tuple(nodes), branches=tuple(branches),
                devices=tuple(devices), battery=battery, path=path,
                policy_table=dict(raw.get("policy", {})),
                profile_tables=dict(raw.get("profile", {})),
                floor_w=floor, safe_budget_w=safe_budget)
