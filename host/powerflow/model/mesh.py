"""Mesh primitives: the rack's DC mesh as index arrays, its conductance matrix, its islands,
and the node port bits that operate its ties. One definition each, used by the allocator's
network (control/dcnet.py), the emulator's physics, the rack case of the grid engine and the
API. Units SI: ohm, S.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from powerflow.model.arrays import Bools, Floats, Ints
from powerflow.model.rack import Rack



@dataclass(frozen=True)
class MeshIndex:
    """A rack's mesh by position: segments numbered in rack-file order, and for every branch,
    converter node and device the number of its segment(s)."""

    segment: dict[str, int]  # segment id -> index
    branch_from: Ints
    branch_to: Ints
    branch_r: Floats  # ohm
    node_seg: Ints  # per node of the rack file
    device_seg: Ints  # per device of the rack file
    battery_seg: int | None

    @property
    def nseg(self) -> int:
        return len(self.segment)

    @classmethod
    def of(cls, rack: Rack) -> MeshIndex:
        seg = {s: k for k, s in enumerate(rack.segments)}
        return cls(segment=seg,
                   branch_from=np.array([seg[b.from_] for b in rack.branches], np.int64),
                   branch_to=np.array([seg[b.to] for b in rack.branches], np.int64),
                   branch_r=np.array([b.r for b in rack.branches], float),
                   node_seg=np.array([seg[n.segment] for n in rack.nodes], np.int64),
                   device_seg=np.array([seg[d.segment] for d in rack.devices], np.int64),
                   battery_seg=None if rack.battery is None else seg[rack.battery.segment])


def laplacian(n: int, f: Ints, t: Ints, y: Any) -> Any:
    """The n × n nodal admittance (Laplacian) matrix of branches f -> t with admittances y
    (S, or complex p.u.); an open branch has y = 0. Dense (a NumPy array) for the few
    segments of a rack; `laplacian_sparse` for grids."""
    g = np.zeros((n, n), dtype=np.result_type(y, float))
    np.add.at(g, (f, f), y)
    np.add.at(g, (t, t), y)
    np.add.at(g, (f, t), -y)
    np.add.at(g, (t, f), -y)
    return g


def laplacian_sparse(n: int, f: Ints, t: Ints, y: Any) -> sp.csr_matrix:
    """As `laplacian`, as a SciPy CSR matrix (duplicates summed)."""
    data = np.concatenate([y, y, -y, -y])
    rows = np.concatenate([f, t, f, t])
    cols = np.concatenate([f, t, t, f])
    return sp.csr_matrix((data, (rows, cols)), shape=(n, n))


def conductance(mesh: MeshIndex, closed: Bools) -> Floats:
    """Segment conductance matrix, S, with the given branches closed."""
    y = np.where(np.asarray(closed, bool), 1.0 / mesh.branch_r, 0.0)
    return laplacian(mesh.nseg, mesh.branch_from, mesh.branch_to, y)


class DisjointSets:
    """Union-find over 0..n-1 (path halving)."""

    def __init__(self, n: int) -> None:
        self.rep = list(range(n))

    def find(self, a: int) -> int:
        rep = self.rep
        while rep[a] != a:
            rep[a] = rep[rep[a]]
            a = rep[a]
        return a

    def union(self, a: int, b: int) -> bool:
        """Join the sets of a and b; False when they were one set already."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self.rep[ra] = rb
        return True


def islands(n: int, f: Ints, t: Ints, closed: Any) -> Ints:
    """Island label of each of n buses joined by branches f -> t where closed: the lowest bus
    index of its island."""
    sets = DisjointSets(n)
    for a, b, c in zip(f, t, closed, strict=True):
        if c:
            sets.union(int(a), int(b))
    low: dict[int, int] = {}
    for k in range(n):
        low.setdefault(sets.find(k), k)
    return np.array([low[sets.find(k)] for k in range(n)], np.int64)


def port_closed(port_state: int, port: int) -> bool:
    """Whether `port` is closed in a node's PORT_STATE bits (bit k: port k closed)."""
    return bool(int(port_state) >> port & 1)
