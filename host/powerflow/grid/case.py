"""Network case data, in the spirit of MATPOWER's case struct: data only, no solver.

Per-unit on `base_mva` (each bus on its own base voltage); loads are consumption
(positive P, Q draw power; a generator is a negative load). Branch `closed` is the state a
study starts from (MATPOWER's BR_STATUS: ties are the branches normally open);
`switchable` says which branches reconfiguration may change. DC networks (every X = 0, no
reactive power) are the same structure with the imaginary parts zero.

Transformers and line charging (from pandapower nets) add what MATPOWER's branch model
has: an off-nominal ratio `tap` at the from end (V_from / tap drives the series impedance)
and shunt admittances at both ends (`y_from`, inside the tap, and `y_to`), plus bus shunts
`y_bus`; all p.u. and consumption-positive (G > 0 draws power, B > 0 is capacitive). A
case without them is *plain* and takes the fast paths (the batch kernel, the relaxations).
An open branch with `keep_end` >= 0 stays connected at that bus (a line switched at one end
only, as pandapower models it): its shunts, seen through its impedance, stay there.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray
from powerflow.model.arrays import Bools, Complexes, Floats, Ints



class CaseError(ValueError):
    """A case that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class FlexBus:
    """A bus whose demand may move within [p_min, p_max] x [q_min, q_max] (p.u.) at a cost."""

    bus: int  # index into Case.bus_ids
    p_min: float
    p_max: float
    q_min: float
    q_max: float
    p_base: float  # the demand with no flexibility used
    q_base: float
    cost: float = 1.0  # weight of this bus's flexibility: a kW here costs cost x c_flex


@dataclass(frozen=True)
class Case:
    name: str
    base_mva: float
    base_kv: float
    bus_ids: Ints  # external bus numbers, in index order
    slack: Ints  # indices of the reference (feed) buses
    v_slack: Floats  # p.u. voltage magnitude at each slack bus
    p_load: Floats  # p.u.
    q_load: Floats  # p.u.
    f: Ints  # branch from-bus index
    t: Ints  # branch to-bus index
    r: Floats  # p.u.
    x: Floats  # p.u.
    closed: Bools
    switchable: Bools
    vmin: Floats  # p.u. limits used by reconfiguration and optimisation
    vmax: Floats
    flex: tuple[FlexBus, ...] = field(default=())
    tap: Floats | None = None  # per branch, off-nominal ratio at the from end (1: none)
    y_from: Complexes | None = None  # per branch, shunt at the from end (inside the tap), p.u.
    y_to: Complexes | None = None  # per branch, shunt at the to end, p.u.
    y_bus: Complexes | None = None  # per bus, shunt admittance, p.u.
    keep_end: Ints | None = None  # per branch: bus index still connected when open, or -1
    labels: tuple[str, ...] = ()  # per branch, what it is in the source (e.g. "line 12")

    @property
    def plain(self) -> bool:
        """No transformer ratio and no shunt anywhere: series impedances only."""
        return (self.tap is None or bool(np.all(self.tap == 1.0))) and not any(
            a is not None and bool(np.any(a != 0)) for a in (self.y_from, self.y_to,
                                                              self.y_bus))

    def taps(self) -> Floats:
        return np.ones(self.n_branch) if self.tap is None else self.tap

    def shunts(self) -> Complexes:
        """Each bus's shunt admittance in the present configuration (p.u.): its own, the
        end shunts of its closed branches (the from end's seen through the tap), and what
        an open branch kept at this end leaves there (its far shunt through its impedance)."""
        y = np.zeros(self.n_bus, complex) if self.y_bus is None else self.y_bus.astype(complex)
        yf = np.zeros(self.n_branch, complex) if self.y_from is None else self.y_from
        yt = np.zeros(self.n_branch, complex) if self.y_to is None else self.y_to
        t = self.taps()
        on = self.closed
        np.add.at(y, self.f[on], yf[on] / t[on] ** 2)
        np.add.at(y, self.t[on], yt[on])
        if self.keep_end is not None:
            for k in np.flatnonzero(~on & (self.keep_end >= 0)):
                y[self.keep_end[k]] += self.open_shunt(int(k))
        return y

    def open_shunt(self, k: int) -> complex:
        """What branch `k`, open but kept at `keep_end[k]`, leaves at that bus (p.u.): its
        near shunt, and its far shunt seen through its impedance (0 if not kept)."""
        if self.keep_end is None or self.keep_end[k] < 0:
            return 0j
        yf = 0j if self.y_from is None else complex(self.y_from[k])
        yt = 0j if self.y_to is None else complex(self.y_to[k])
        near, far = (yf, yt) if self.keep_end[k] == self.f[k] else (yt, yf)
        return near + (1 / (complex(self.z[k]) + 1 / far) if far != 0 else 0j)

    @property
    def n_bus(self) -> int:
        return len(self.bus_ids)

    @property
    def n_branch(self) -> int:
        return len(self.f)

    @property
    def z(self) -> NDArray[np.complex128]:
        return self.r + 1j * self.x

    @property
    def s_load(self) -> NDArray[np.complex128]:
        return self.p_load + 1j * self.q_load

    def index_of(self, bus_id: int) -> int:
        hits = np.flatnonzero(self.bus_ids == bus_id)
        if len(hits) != 1:
            raise CaseError(f"{self.name}: no bus {bus_id}")
        return int(hits[0])

    def with_open(self, open_branches: Ints | list[int]) -> Case:
        """The case with exactly these branch indices open and all others closed."""
        closed = np.ones(self.n_branch, dtype=bool)
        closed[np.asarray(open_branches, dtype=int)] = False
        return replace(self, closed=closed)

    def with_loads(self, p_load: Floats, q_load: Floats) -> Case:
        return replace(self, p_load=np.asarray(p_load, float), q_load=np.asarray(q_load, float))

    def validate(self) -> Case:
        """Check the arrays fit together; raises CaseError naming the problem."""
        n, m = self.n_bus, self.n_branch
        for name in ("p_load", "q_load", "vmin", "vmax"):
            if len(getattr(self, name)) != n:
                raise CaseError(f"{self.name}: {name} has {len(getattr(self, name))} entries, "
                                f"expected one per bus ({n})")
        for name in ("t", "r", "x", "closed", "switchable"):
            if len(getattr(self, name)) != m:
                raise CaseError(f"{self.name}: {name} has {len(getattr(self, name))} entries, "
                                f"expected one per branch ({m})")
        if len(self.slack) == 0:
            raise CaseError(f"{self.name}: no reference (slack) bus")
        if np.any((self.f < 0) | (self.f >= n) | (self.t < 0) | (self.t >= n)):
            raise CaseError(f"{self.name}: a branch names a bus that does not exist")
        if np.any(self.f == self.t):
            k = int(np.flatnonzero(self.f == self.t)[0])
            raise CaseError(f"{self.name}: branch {k + 1} connects bus {self.bus_ids[self.f[k]]} "
                            "to itself")
        if np.any(self.r < 0) or not np.all(np.isfinite(self.r + self.x)):
            raise CaseError(f"{self.name}: branch resistances must be finite and >= 0")
        if np.any(np.abs(self.z) == 0):
            k = int(np.flatnonzero(np.abs(self.z) == 0)[0])
            raise CaseError(f"{self.name}: branch {k + 1} has zero impedance")
        for fb in self.flex:
            if not fb.cost >= 0:
                raise CaseError(f"{self.name}: flexible bus {self.bus_ids[fb.bus]} has a negative cost")
            if not (fb.p_min <= fb.p_base <= fb.p_max and fb.q_min <= fb.q_base <= fb.q_max):
                raise CaseError(f"{self.name}: flexible bus {self.bus_ids[fb.bus]} has its base outside [min, max]")
        return self
