"""The one boundary between the control loop and a rack.

A `RackIO` is what the control loop sees of a rack and how it acts on it: it observes
(node telemetry, device samples, the battery, the feed) and applies `Commands` (setpoints
held as leases, tie ports, device caps, the battery command). What the commands are is
decided once, by the dispatcher (control/dispatch.py), from an allocation and from what
each node was last told (`Commanded`); a RackIO only carries them out and keeps the leases
alive. Implementations (powerflow/adapters/): the live rack, real boards or the
full-process emulated rack, through the node manager; fast mode, on the virtual clock of
the scenario runner. Units: V, W.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from powerflow.control.allocate import BatteryView
from powerflow.control.controller import DeviceObs, NodeObs


@dataclass(frozen=True)
class Commanded:
    """What one node holds from the host, as its RackIO knows it."""

    online: bool  # commands can reach it now
    vout: float | None  # V the host leases it; None: no output leased (off or never set)
    off_leased: bool  # off by the host's choice (the off state is leased too)
    port_state: int | None  # the PORT_STATE bits it last reported (bit k: port k closed)
    vout_max: float  # V: the highest it may be set to
    # off in standby: (V it starts at, V the bus must fall under); None: plain off or on
    standby: tuple[float, float] | None = None


@dataclass(frozen=True)
class Commands:
    """What to send to the rack now: only what changes (leases are renewed by the RackIO)."""

    setpoints: dict[int, float | None] = field(default_factory=dict)  # node -> V; None = off
    # of the nodes set off, those held ready: node -> (V it starts at, V the bus must fall
    # under for it to start on its own; protocol/SPEC.md, Standby)
    standby: dict[int, tuple[float, float]] = field(default_factory=dict)
    ports: dict[tuple[int, int], bool] = field(default_factory=dict)  # (node, port) -> closed
    caps: dict[str, float | None] = field(default_factory=dict)  # W per device; None = uncapped
    battery_w: float = 0.0  # W, + discharging into the bus
    battery_shave_above_w: float | None = None  # W of feed draw above which the battery acts
    # per device: (up, down) ramp-rate limits, W/s (None: not limited that way); empty: none
    ramps: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)


class RackIO(Protocol):
    """A rack as the control loop sees it (see the module docstring)."""

    def observe_nodes(self) -> dict[int, NodeObs]:
        """Each node's link state and latest telemetry, with the lowest output voltage among
        the samples that arrived since the last call."""
        ...

    def observe_devices(self) -> dict[str, DeviceObs]:
        """Each device's power (W) and utilisation (0..1) where a fresh sample exists."""
        ...

    def battery(self) -> BatteryView | None: ...

    def feed_w(self) -> float:
        """Power drawn from the feed now, W."""
        ...

    def commanded(self) -> dict[int, Commanded]: ...

    async def poll(self) -> None:
        """Once a period before observing: refresh samples that have to be fetched."""
        ...

    async def apply(self, cmds: Commands) -> int:
        """Carry out `cmds`; returns how many commands failed (the lease keeps the last good
        state meanwhile, and the next period tries again)."""
        ...
