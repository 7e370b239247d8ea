"""The mesh primitives against independent oracles: SciPy's connected components for the
islands, a branch-by-branch sum for the Laplacian, every rack file of the examples."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from powerflow.model.mesh import (MeshIndex, conductance, islands, laplacian, laplacian_sparse,
                                  port_closed)
from powerflow.model.rack import load_rack
from tests.conftest import ROOT

RACKS = sorted((ROOT / "examples" / "racks").glob("*.toml"))


@st.composite
def graphs(draw):
    n = draw(st.integers(1, 12))
    m = draw(st.integers(0, 20))
    f = np.array(draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m)), np.int64)
    t = np.array(draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m)), np.int64)
    closed = np.array(draw(st.lists(st.booleans(), min_size=m, max_size=m)), bool)
    y = np.array(draw(st.lists(st.floats(0.1, 100.0), min_size=m, max_size=m)), float)
    return n, f, t, closed, y


@settings(max_examples=200, deadline=None)
@given(graphs())
def test_islands_agree_with_scipy_connected_components(g) -> None:
    n, f, t, closed, _ = g
    lab = islands(n, f, t, closed)
    adj = coo_matrix((np.ones(int(closed.sum())), (f[closed], t[closed])), shape=(n, n))
    _, comp = connected_components(adj, directed=False)
    for a in range(n):
        for b in range(n):
            assert (lab[a] == lab[b]) == (comp[a] == comp[b])
        assert lab[a] == min(k for k in range(n) if comp[k] == comp[a])  # lowest index


@settings(max_examples=200, deadline=None)
@given(graphs())
def test_the_laplacian_is_the_sum_of_its_branches(g) -> None:
    n, f, t, closed, y = g
    y = np.where(closed, y, 0.0)
    want = np.zeros((n, n))
    for a, b, w in zip(f, t, y, strict=True):
        e = np.zeros(n)
        e[a] += 1.0
        e[b] -= 1.0
        want += w * np.outer(e, e)
    assert np.allclose(laplacian(n, f, t, y), want)
    assert np.allclose(laplacian_sparse(n, f, t, y).toarray(), want)


@pytest.mark.parametrize("path", RACKS, ids=lambda p: p.stem)
def test_every_example_rack_indexes_and_conducts(path) -> None:
    rack = load_rack(path)
    m = MeshIndex.of(rack)
    assert [rack.segments[k] for k in m.node_seg] == [n.segment for n in rack.nodes]
    assert [rack.segments[k] for k in m.device_seg] == [d.segment for d in rack.devices]
    g = conductance(m, [b.closed for b in rack.branches])
    assert np.allclose(g.sum(axis=1), 0.0) and np.allclose(g, g.T)


def test_port_bits() -> None:
    assert port_closed(0b101, 0) and not port_closed(0b101, 1) and port_closed(0b101, 2)
