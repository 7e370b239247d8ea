"""The one dispatcher: from an allocation to the commands that go out now.

Make before break: a converter is switched off, and a tie opened, only once two plans in a
row agree, so what replaces it is already on (or closed) when it goes. A setpoint goes out
only where it changes what the node holds (within 2 mV); what a node already holds is kept
alive by its RackIO's lease renewal. The live loop and the scenario runner both dispatch
through this.
"""

from __future__ import annotations

from dataclasses import dataclass

from powerflow.control.allocate import Allocation
from powerflow.control.rackio import Commanded, Commands
from powerflow.model.mesh import port_closed
from powerflow.model.rack import Rack

SETPOINT_DEADBAND_V = 0.002  # a change smaller than this is not sent


@dataclass(frozen=True)
class Dispatch:
    hold: frozenset[int]  # nodes planned off but on in the previous plan: leave them as they are
    ports: dict[int, bool]  # branch index -> closed, for the ties to act on now


def make_before_break(a: Allocation, prev: Allocation | None) -> Dispatch:
    hold = frozenset(nid for nid, v in a.vref.items()
                     if v is None and (prev is None or prev.vref.get(nid) is not None))
    ports = {k: c for k, c in enumerate(a.closed)
             if c or prev is None or not prev.closed[k]}
    return Dispatch(hold, ports)


class Dispatcher:
    """Turns each allocation into commands, remembering the previous one (make before
    break needs two plans in a row)."""

    def __init__(self, rack: Rack) -> None:
        self.rack = rack
        self.prev: Allocation | None = None

    def commands(self, a: Allocation, held: dict[int, Commanded]) -> Commands:
        now = make_before_break(a, self.prev)
        setpoints: dict[int, float | None] = {}
        standby: dict[int, tuple[float, float]] = {}
        for nid, vref in a.vref.items():
            c = held.get(nid)
            if c is None or not c.online:
                continue
            if vref is None:
                sb = a.standby.get(nid)
                if sb is not None:
                    sb = (min(sb[0], c.vout_max), sb[1])
                # off, unless it is on and the plan of before had it on (make before break);
                # an off already leased as planned (standby or not) is left to the renewal
                if (nid not in now.hold and c.vout is not None) or (
                        c.vout is None and (not c.off_leased or c.standby != sb)):
                    setpoints[nid] = None
                    if sb is not None:
                        standby[nid] = sb
            elif c.vout is None or abs(c.vout - vref) > SETPOINT_DEADBAND_V:
                setpoints[nid] = min(vref, c.vout_max)
        ports: dict[tuple[int, int], bool] = {}
        for k, want in now.ports.items():
            b = self.rack.branches[k]
            if b.port is None:
                continue
            c = held.get(b.port[0])
            if c is None or not c.online or c.port_state is None:
                continue
            if port_closed(c.port_state, b.port[1]) != want:
                ports[b.port] = want
        self.prev = a
        ramps = {dev: (p.get("smoothing_up_w_per_s"), p.get("smoothing_down_w_per_s"))
                 for dev, p in a.devices.items()
                 if p.get("smoothing_up_w_per_s") or p.get("smoothing_down_w_per_s")}
        return Commands(setpoints=setpoints, standby=standby, ports=ports, caps=dict(a.caps),
                        battery_w=a.battery_w, battery_shave_above_w=a.battery_shave_above_w,
                        ramps=ramps)
