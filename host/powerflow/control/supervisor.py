"""The supervisor: what is measured against what was planned, apart from the optimiser.

Checked on every tick of the loop (several per period), on fresh telemetry only: a bus
under the brownout level anywhere, or a converter current-limited (no plan expects one:
the allocator plans every converter below its limit). Seen on DEBOUNCE distinct readings
in a row, it trips; so does a node reporting its failsafe (its host was away), at once,
since the failsafe runs it at the bus voltage the safe allocation uses: the safe allocation goes out at once (every converter not proven
failed on at the bus voltage, sharing by droop), with an alarm and an event. Safe mode
lasts until the measurements agree with the plan again — every measured bus in the
policy's band and no converter current-limited — for EXIT_PERIODS periods in a row.

A node still `starting` (readings.StartUp: heard, not yet energised, within its grace)
is not judged, though its reading is still reported as measured: a bus nobody has
switched on yet is not a sag. Units: V, s.
"""

from __future__ import annotations

from dataclasses import dataclass

from pfproto import defs as d
from powerflow.control.alarms import AlarmBook
from powerflow.control.readings import Reading
from powerflow.model.rack import BROWNOUT_V_PU, Rack

DEBOUNCE = 2  # distinct readings in a row before the supervisor acts
EXIT_PERIODS = 3  # periods of agreement before safe mode ends


@dataclass
class Measured:
    """The bus as the nodes measure it (fresh readings only)."""

    vmin: float | None  # V
    vmax: float | None
    vmin_node: int | None
    current_limited: list[int]
    failsafe: list[int]  # nodes running their failsafe, not the plan
    readings: int  # fresh readings it is made of
    newest_t: float  # s: the newest sample among them
    # the lowest bus among the nodes that are judged (not still starting), V, and its node:
    # what the supervisor checks; vmin above is what is reported, every fresh reading's
    judged_vmin: float | None = None
    judged_node: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {"vmin": self.vmin, "vmax": self.vmax, "vmin_node": self.vmin_node,
                "current_limited": self.current_limited, "failsafe": self.failsafe,
                "readings": self.readings}


def measure(readings: dict[int, Reading]) -> Measured:
    # the lowest sample since the last look, not only the latest: a sag shorter than the
    # time between two looks is still a sag the nodes measured
    vs = {i: r.vout_low for i, r in readings.items() if r.fresh and r.vout_low is not None}
    judged = {i: v for i, v in vs.items() if not readings[i].starting}
    jlo = min(judged, key=lambda i: judged[i]) if judged else None
    cc = sorted(i for i, r in readings.items() if r.fresh and r.mode == d.MODE_CC)
    # in failsafe and still driving the bus (a ramped-down or off one is only unavailable)
    fs = sorted(i for i, r in readings.items() if r.fresh and r.mode == d.MODE_FAILSAFE
                and r.cmd is not None and r.cmd > 0)
    newest = max((r.sampled_t for r in readings.values() if r.fresh), default=0.0)
    if not vs:
        return Measured(None, None, None, cc, fs, 0, newest)
    lo = min(vs, key=lambda i: vs[i])
    hi = max(r.vout if r.vout is not None else vs[i] for i, r in readings.items() if i in vs)
    return Measured(vs[lo], hi, lo, cc, fs, len(vs), newest,
                    None if jlo is None else judged[jlo], jlo)


class Supervisor:
    def __init__(self, rack: Rack, alarms: AlarmBook) -> None:
        self.rack = rack
        self.alarms = alarms
        self.safe = False
        self.why = ""
        self.since: float | None = None
        self.trips = 0  # safe-mode entries since start
        self._hits = 0
        self._last_sample = 0.0
        self._agree = 0

    def trouble(self, m: Measured) -> str:
        """What is wrong with the measured rack now ('' if nothing)."""
        low = BROWNOUT_V_PU * self.rack.bus_voltage
        if m.judged_vmin is not None and m.judged_vmin < low:
            return f"bus at node {m.judged_node} {m.judged_vmin:.2f} V, under {low:.2f} V"
        if m.current_limited:
            return "current-limited: node " + ", ".join(str(i) for i in m.current_limited)
        if m.failsafe:
            return "in failsafe: node " + ", ".join(str(i) for i in m.failsafe)
        return ""

    def tick(self, t: float, m: Measured) -> bool:
        """Check the measurements; True when safe mode starts now."""
        why = self.trouble(m)
        if m.newest_t > self._last_sample:  # a distinct reading
            self._last_sample = m.newest_t
            self._hits = self._hits + 1 if why else 0
        kind = ("bus_sag" if why.startswith("bus") else "current_limit"
                if why.startswith("current") else "")
        if kind:
            self.alarms.set(t, kind, "critical" if kind == "bus_sag" else "major", why)
        if kind != "bus_sag":
            self.alarms.clear(t, "bus_sag", "bus back over the brownout level")
        if kind != "current_limit":
            self.alarms.clear(t, "current_limit", "no converter current-limited")
        # a node's own report of failsafe needs no debounce: until every node is back, the
        # safe allocation (the failsafe's own voltage) is the only plan that agrees with all
        if why and (self._hits >= DEBOUNCE or why.startswith("in failsafe")) and not self.safe:
            self.safe, self.why, self.since, self._agree = True, why, t, 0
            self.trips += 1
            self.alarms.set(t, "safe_mode", "critical",
                            f"{why}: every converter not proven failed on at the bus voltage")
            return True
        return False

    def period(self, t: float, m: Measured, v_min_pu: float, v_max_pu: float) -> None:
        """Once a period: leave safe mode after EXIT_PERIODS periods of agreement."""
        if not self.safe:
            return
        nom = self.rack.bus_voltage
        agree = (m.readings > 0 and not m.current_limited and m.vmin is not None
                 and m.vmax is not None and m.vmin >= v_min_pu * nom - 0.01
                 and m.vmax <= v_max_pu * nom + 0.01)
        self._agree = self._agree + 1 if agree else 0
        if self._agree >= EXIT_PERIODS:
            self.safe, self._agree = False, 0
            self.alarms.clear(t, "safe_mode", f"measurements agreed with the plan for "
                                              f"{EXIT_PERIODS} periods")
            self.since = None
