"""A rack stand-in: the site protocol and a rack's lease logic over a demand trace.

For scale and for the site scenarios: a stand-in has the real `SiteBudget` (so it takes,
clamps, refuses and falls back exactly as a rack does) and the real `SiteAgent`, and in place
of converters a demand per priority that follows a trace. It draws what its demand asks,
capped by the budget in force: the least important priorities give way first, never below
their minimum. Units: W, s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from powerflow.control.alarms import AlarmBook
from powerflow.control.budget import SiteBudget
from powerflow.model.site import SiteRack
from powerflow.site.agent import RackDemand
from powerflow.site.messages import ClassDemand

# a rack's demand by priority as fractions of its feed limit: (p95 share, min share)
DEFAULT_MIX = {1: (0.25, 0.20), 4: (0.35, 0.10), 8: (0.40, 0.0)}


def diurnal(level: float = 0.7, swing: float = 0.2, period_s: float = 120.0,
            phase: float = 0.0) -> Callable[[float], float]:
    """A load factor (0..1) over time: `level` ± `swing`, one cycle per `period_s`."""
    return lambda t: min(max(level + swing * math.sin(2 * math.pi * t / period_s + phase),
                             0.0), 1.0)


@dataclass
class StandIn:
    rack: SiteRack
    load: Callable[[float], float]  # t -> load factor 0..1 of the rack's demand
    mix: dict[int, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_MIX))
    surge: float = 1.0  # a multiplier the scenarios set (a demand surge)
    alarms: AlarmBook = field(default_factory=AlarmBook)
    budget: SiteBudget = field(init=False)

    def __post_init__(self) -> None:
        lim = self.rack.feed_limit_w
        self.budget = SiteBudget(self.rack.floor_w, self.rack.floor_w, lim, self.alarms)

    def wants(self, t: float) -> dict[int, ClassDemand]:
        """Demand per priority now (W): its P95, and the least it can be capped to."""
        f = min(self.load(t) * self.surge, 1.0)
        lim = self.rack.feed_limit_w
        return {p: ClassDemand(mean_w=round(f * hi * lim * 0.97, 2), p95_w=round(f * hi * lim, 2),
                               min_w=round(min(lo, hi * f) * lim, 2))
                for p, (hi, lo) in self.mix.items()}

    def draw_w(self, t: float) -> float:
        """What the rack draws now (W): its demand, within the budget in force."""
        want = sum(c.p95_w for c in self.wants(t).values())
        return min(want, self.budget.limit_w(t))

    def demand(self, t: float) -> RackDemand:
        classes = self.wants(t)
        return RackDemand(measured_w=round(self.draw_w(t), 2),
                          min_w=round(sum(c.min_w for c in classes.values()), 2),
                          headroom_w=self.rack.feed_limit_w, classes=classes)
