"""Make before break: which parts of an allocation go out now.

A converter is switched off, and a tie opened, only once two plans in a row agree, so what
replaces it is already on (or closed) when it goes. The live loop and the scenario runner
both dispatch through this, over their own transports.
"""

from __future__ import annotations

from dataclasses import dataclass

from powerflow.control.allocate import Allocation


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
