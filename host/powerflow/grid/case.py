"""Network case data, in the spirit of MATPOWER's case struct: data only, no solver.

Per-unit on `base_mva`; loads are consumption (positive P, Q draw power).
Branch `closed` is the state a study starts from (MATPOWER's BR_STATUS: ties
are the branches normally open); `switchable` says which branches
reconfiguration may change. DC networks (every X = 0, no reactive power) are
the same structure with the imaginary parts zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray
from powerflow.model.arrays import Bools, Floats, Ints



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
