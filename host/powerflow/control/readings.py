"""Each node's latest telemetry as the supervisor and the health judge read it, and where
in its start-up each node is.

A host that has just started has not heard every node yet, and a node it has heard may
still have its output off (0 V, before the first command's soft-start). Neither is a
fault: `StartUp` flags each reading with where its node stands, once, for both judges.
- `connecting`: never heard since the host started, and the host started less than
  CONNECT_GRACE_S ago (its link is still opening): the judge raises no `link_lost` yet.
  After the grace a node still never heard is `link_lost` ("never connected").
- `starting`: heard, not yet energised since then (off or soft-starting under the bus
  voltage), for at most START_GRACE_S from when it was first heard: the supervisor does
  not judge its bus. A node that was energised once is judged at every reading from then
  on, and one that has not come up after the grace is judged too.
Readings are still *reported* as measured either way; only the judgement waits.
Units: V, A, s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pfproto import defs as d
from powerflow.model.rack import BROWNOUT_V_PU, Rack

CONNECT_GRACE_S = 10.0  # links open and the first hello round trip take a second or two
START_GRACE_S = 10.0  # the first command follows within a period and soft-start takes
# ~0.1 s (firmware: 100 V/s)


@dataclass
class Reading:
    """One node's latest telemetry as the judges need it."""

    online: bool
    fresh: bool  # no older than a period
    sampled_t: float  # s (Unix time) when it was sampled (arrival, less nothing: 1 frame)
    mode: int
    cmd: float | None  # VOUT_COMMAND it reports, V
    vout: float | None  # V
    iout: float  # A
    faults: int  # latched protection faults (failsafe and watchdog bits masked)
    age_s: float
    lost_count: int = 0  # times the host declared the link lost
    vout_low: float | None = None  # V: lowest sample since the last look (vout if none newer)
    # where the node is in its start-up (StartUp.mark); as built, a node in service
    heard: bool = True  # online at least once since the host started
    connecting: bool = False  # never heard, within CONNECT_GRACE_S of the host's start
    starting: bool = False  # heard, not yet energised, within START_GRACE_S of first contact


def reading(obs: Any, now: float, period_s: float) -> Reading:
    """A node's observation (online, telemetry, age in s) as a Reading at `now`."""
    tel = obs.telemetry
    faults = int(tel.get("FAULTS") or 0) & ~d.FAULT_FAILSAFE & ~d.FAULT_WATCHDOG
    cmd, vout = tel.get("VOUT_COMMAND"), tel.get("READ_VOUT")
    return Reading(bool(obs.online), bool(obs.online and tel and obs.age_s <= period_s),
                   now - obs.age_s, int(tel.get("MODE", d.MODE_OFF)),
                   None if cmd is None else float(cmd), None if vout is None else float(vout),
                   float(tel.get("READ_IOUT") or 0.0), faults, float(obs.age_s),
                   int(obs.lost_count), _low(getattr(obs, "vout_low", None), vout))


def _low(low: Any, vout: Any) -> float | None:
    vals = [float(v) for v in (low, vout) if v is not None]
    return min(vals) if vals else None


class StartUp:
    """Where each node is in its start-up; the host's start is the first `mark`."""

    def __init__(self, rack: Rack) -> None:
        self.level = BROWNOUT_V_PU * rack.bus_voltage  # V: energised at or above this
        self.start_t: float | None = None  # s: the first readings marked
        self.first_heard: dict[int, float] = {}  # node -> s
        self.energised: set[int] = set()

    def mark(self, t: float, readings: dict[int, Reading]) -> dict[int, Reading]:
        """The readings, each flagged with where its node is in its start-up."""
        if self.start_t is None:
            self.start_t = t
        out = {}
        for i, r in readings.items():
            if r.online:
                self.first_heard.setdefault(i, t)
            # energised: seen at the bus voltage, or in any mode past off and soft-start (a
            # converter regulating or current-limited into a low bus is judged at once)
            if r.fresh and ((r.vout is not None and r.vout >= self.level)
                            or r.mode not in (d.MODE_OFF, d.MODE_SOFTSTART)):
                self.energised.add(i)
            heard = i in self.first_heard
            out[i] = replace(
                r, heard=heard,
                connecting=not heard and t - self.start_t < CONNECT_GRACE_S,
                starting=(heard and i not in self.energised
                          and t - self.first_heard[i] < START_GRACE_S))
        return out
