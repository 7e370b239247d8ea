"""Alarms and events of the control loop: what is wrong now, and what happened.

An alarm is a condition that lasts (a sagging bus, a converter excluded, telemetry stale),
keyed by its kind and the node it concerns; raising it again while it is active only
updates its detail. Every raise and clear is also an event, and so are things that only
happen (a probe and its verdict). Pure bookkeeping: the loop drains the events into the
store, the API lists the active alarms.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

SEVERITIES = ("critical", "major", "minor", "warning")  # most severe first


@dataclass
class Alarm:
    kind: str  # e.g. bus_sag, safe_mode, node_excluded, late_cycle, stale_telemetry
    severity: str  # one of SEVERITIES
    node: int | None  # the node it concerns, None for the rack
    since: float  # s (Unix time) when it was raised
    detail: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Event:
    t: float  # s (Unix time)
    node: int | None
    kind: str
    detail: str


class AlarmBook:
    def __init__(self) -> None:
        self.active: dict[tuple[str, int | None], Alarm] = {}
        self.events: list[Event] = []  # not yet drained
        self.raised = 0  # alarms raised since start, by any kind

    def event(self, t: float, kind: str, detail: str, node: int | None = None) -> None:
        self.events.append(Event(t, node, kind, detail))

    def set(self, t: float, kind: str, severity: str, detail: str,
            node: int | None = None) -> None:
        """Raise (or keep raised) alarm `kind` for `node`; an event when it is new."""
        assert severity in SEVERITIES, severity
        key = (kind, node)
        if key in self.active:
            self.active[key].detail = detail
            return
        self.active[key] = Alarm(kind, severity, node, t, detail)
        self.raised += 1
        self.event(t, kind, f"raised ({severity}): {detail}", node)

    def clear(self, t: float, kind: str, detail: str = "", node: int | None = None) -> None:
        """Clear alarm `kind` for `node` if it is active; an event says how long it lasted."""
        a = self.active.pop((kind, node), None)
        if a is not None:
            self.event(t, kind, f"cleared after {t - a.since:.1f} s"
                                + (f": {detail}" if detail else ""), node)

    def is_active(self, kind: str, node: int | None = None) -> bool:
        return (kind, node) in self.active

    def listing(self) -> list[Alarm]:
        """Active alarms, most severe first, then oldest first."""
        return sorted(self.active.values(),
                      key=lambda a: (SEVERITIES.index(a.severity), a.since))

    def drain(self) -> list[Event]:
        out, self.events = self.events, []
        return out
