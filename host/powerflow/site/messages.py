"""The site protocol's topics and payloads (protocol/SITE.md): CBOR maps over MQTT 5.

Topics, for site S and rack client C (its MQTT client id and user name):

    pf/v1/S/rack/C/birth        rack -> site   on connect: floor, safe budget, feed limit
    pf/v1/S/rack/C/death        rack -> site   its MQTT will (the broker sends it)
    pf/v1/S/rack/C/report       rack -> site   every site period: measured and forecast W
    pf/v1/S/rack/C/ack          rack -> site   the verdict on each budget
    pf/v1/S/rack/C/cmd/budget   site -> rack   a budget lease
    pf/v1/S/rack/C/cmd/rebirth  site -> rack   send your birth again
    pf/v1/S/active              site -> all    retained: the active controller and its epoch
                                               (its will says it went offline)

Every payload carries `seq` (per sender, from 0 at each birth) and `t` (the sender's Unix
time, s). Decoding checks types and ranges and raises `MessageError` with the reason: a
message that fails is counted and dropped, nothing else changes. Units: W, s.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import cbor2

PREFIX = "pf/v1"
MAX_PAYLOAD = 16384  # bytes: a report of ten classes is ~400
MAX_W = 1e9
CLOCK_SKEW_S = 1.0  # the clocks of site and racks agree to within this (NTP)


class MessageError(ValueError):
    """A payload that is not what its topic carries; the message says why."""


def rack_topic(site: str, client: str, what: str) -> str:
    return f"{PREFIX}/{site}/rack/{client}/{what}"


def active_topic(site: str) -> str:
    return f"{PREFIX}/{site}/active"


def parse_rack_topic(site: str, topic: str) -> tuple[str, str] | None:
    """(client, what) of a rack topic of `site` (what: birth, death, report, ack), else None."""
    parts = topic.split("/")
    if len(parts) != 6 or "/".join(parts[:2]) != PREFIX or parts[2:4] != [site, "rack"]:
        return None
    return parts[4], parts[5]


def _num(m: dict[str, Any], key: str, lo: float = 0.0, hi: float = MAX_W) -> float:
    v = m.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise MessageError(f"'{key}': expected a finite number; got {v!r}")
    if not lo <= v <= hi:
        raise MessageError(f"'{key}': expected {lo} to {hi}; got {v!r}")
    return float(v)


def _int(m: dict[str, Any], key: str) -> int:
    v = m.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
        raise MessageError(f"'{key}': expected a whole number from 0; got {v!r}")
    return v


def _text(m: dict[str, Any], key: str) -> str:
    v = m.get(key)
    if not isinstance(v, str) or not 0 < len(v) <= 64:
        raise MessageError(f"'{key}': expected text of 1 to 64 characters; got {v!r}")
    return v


def _map(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD:
        raise MessageError(f"payload of {len(payload)} bytes, above {MAX_PAYLOAD}")
    try:
        m = cbor2.loads(payload)
    except Exception as e:  # cbor2 raises several kinds for malformed input
        raise MessageError(f"not CBOR: {e}") from None
    if not isinstance(m, dict):
        raise MessageError(f"expected a CBOR map; got {type(m).__name__}")
    return m


def encode(msg: Any) -> bytes:
    return cbor2.dumps(asdict(msg))


@dataclass(frozen=True)
class Birth:
    seq: int
    t: float
    floor_w: float
    safe_w: float
    feed_limit_w: float

    @staticmethod
    def decode(payload: bytes) -> Birth:
        m = _map(payload)
        return Birth(seq=_int(m, "seq"), t=_num(m, "t", 0, 1e11), floor_w=_num(m, "floor_w"),
                     safe_w=_num(m, "safe_w"), feed_limit_w=_num(m, "feed_limit_w"))


@dataclass(frozen=True)
class ClassDemand:
    """One priority level's demand at the rack's feed (W)."""

    mean_w: float
    p95_w: float
    min_w: float  # the least it can be capped to


@dataclass(frozen=True)
class Report:
    seq: int
    t: float
    measured_w: float  # feed power drawn now
    min_w: float  # the least the rack can reach by capping every class
    headroom_w: float  # what its converters could still deliver
    budget_w: float  # the budget it obeys now
    lease_valid: bool
    epoch: int  # the highest controller epoch it has seen (-1: none)
    classes: dict[int, ClassDemand] = field(default_factory=dict)  # rack priority -> demand

    @staticmethod
    def decode(payload: bytes, feed_limit_w: float | None = None) -> Report:
        m = _map(payload)
        raw = m.get("classes")
        if not isinstance(raw, dict) or len(raw) > 10:
            raise MessageError("'classes': expected a map of at most 10 priorities")
        classes = {}
        for p, c in raw.items():
            if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 10:
                raise MessageError(f"'classes': priority {p!r} not in 1..10")
            if not isinstance(c, dict):
                raise MessageError(f"'classes'[{p}]: expected a map")
            cd = ClassDemand(mean_w=_num(c, "mean_w"), p95_w=_num(c, "p95_w"),
                             min_w=_num(c, "min_w"))
            if not cd.min_w <= cd.p95_w + 1e-6:
                raise MessageError(f"'classes'[{p}]: min_w {cd.min_w} above p95_w {cd.p95_w}")
            classes[p] = cd
        epoch = m.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < -1:
            raise MessageError(f"'epoch': expected a whole number from -1; got {epoch!r}")
        valid = m.get("lease_valid")
        if not isinstance(valid, bool):
            raise MessageError(f"'lease_valid': expected true or false; got {valid!r}")
        r = Report(seq=_int(m, "seq"), t=_num(m, "t", 0, 1e11),
                   measured_w=_num(m, "measured_w"), min_w=_num(m, "min_w"),
                   headroom_w=_num(m, "headroom_w"), budget_w=_num(m, "budget_w"),
                   lease_valid=valid, epoch=epoch, classes=classes)
        if feed_limit_w is not None:
            # a rack cannot draw more than its own breaker lets through
            for what, w in (("measured_w", r.measured_w), ("min_w", r.min_w),
                            ("p95 total", sum(c.p95_w for c in classes.values()))):
                if w > feed_limit_w * 1.05:
                    raise MessageError(f"{what} {w:.0f} W above the rack's feed limit "
                                       f"{feed_limit_w:.0f} W: absurd")
        return r


@dataclass(frozen=True)
class Budget:
    seq: int
    t: float  # the controller's clock when sent
    budget_w: float
    lease_s: float
    epoch: int
    controller: str

    @staticmethod
    def decode(payload: bytes) -> Budget:
        m = _map(payload)
        # the range checks of the budget itself (floor, feed limit) are the rack's: it clamps
        v = m.get("budget_w")
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise MessageError(f"'budget_w': expected a number; got {v!r}")
        lease = m.get("lease_s")
        if isinstance(lease, bool) or not isinstance(lease, int | float):
            raise MessageError(f"'lease_s': expected a number; got {lease!r}")
        return Budget(seq=_int(m, "seq"), t=_num(m, "t", 0, 1e11), budget_w=float(v),
                      lease_s=float(lease), epoch=_int(m, "epoch"),
                      controller=_text(m, "controller"))


@dataclass(frozen=True)
class Ack:
    seq: int  # the rack's own sequence number
    t: float
    budget_seq: int  # the budget's seq it answers
    epoch: int
    controller: str
    accepted: bool
    budget_w: float  # W it obeys now
    reason: str

    @staticmethod
    def decode(payload: bytes) -> Ack:
        m = _map(payload)
        ok = m.get("accepted")
        reason = m.get("reason")
        if not isinstance(ok, bool) or not isinstance(reason, str) or len(reason) > 64:
            raise MessageError("'accepted'/'reason': expected true or false and short text")
        return Ack(seq=_int(m, "seq"), t=_num(m, "t", 0, 1e11), budget_seq=_int(m, "budget_seq"),
                   epoch=_int(m, "epoch"), controller=_text(m, "controller"), accepted=ok,
                   budget_w=_num(m, "budget_w"), reason=reason)


@dataclass(frozen=True)
class Active:
    """The retained state of the site: who controls it, in which epoch, online or not."""

    controller: str
    epoch: int
    online: bool
    t: float

    @staticmethod
    def decode(payload: bytes) -> Active:
        m = _map(payload)
        online = m.get("online")
        if not isinstance(online, bool):
            raise MessageError(f"'online': expected true or false; got {online!r}")
        return Active(controller=_text(m, "controller"), epoch=_int(m, "epoch"), online=online,
                      t=_num(m, "t", 0, 1e11))
