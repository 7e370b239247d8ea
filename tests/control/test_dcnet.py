"""The allocator's DC load flow against the emulator's physics (an independent solver of
the same mesh), and `realise` against `flow` (its inverse)."""

from __future__ import annotations

import numpy as np
import pytest

from powerflow.control.dcnet import DcNetwork, flow, realise
from powerflow.emulator.physics import RackPhysics
from powerflow.model.rack import load_rack
from tests.conftest import ROOT

RACK = load_rack(ROOT / "examples" / "racks" / "small.toml")


def steady_physics(vref: np.ndarray, scale: float) -> RackPhysics:
    ph = RackPhysics(RACK, seed=1)
    ports = {n.id: 0 for n in RACK.nodes}
    for b in RACK.branches:  # the ties in their normal state, through their nodes' ports
        if b.port is not None and b.closed:
            ports[b.port[0]] |= 1 << b.port[1]
    for k, n in enumerate(RACK.nodes):
        on = not np.isnan(vref[k])
        ph.set_actuators(n.id, float(vref[k]) if on else 0.0, on, ports[n.id])
    ph.dev_p = np.array([d.p_nom_w for d in RACK.devices]) * scale
    ph.v[:] = 11.5
    for _ in range(400):  # implicit Euler to its fixed point: the steady state
        ph.solve(dt=1.0)
    return ph


@pytest.mark.parametrize("vref,scale", [
    ([12.3, 12.3, 12.3, 12.3], 1.0),
    ([12.4, 12.25, 12.35, 12.3], 1.2),
    ([12.5, np.nan, 12.45, np.nan], 0.6),  # two converters off: their segments fed by the mesh
])
def test_flow_matches_the_emulator_steady_state(vref, scale) -> None:
    vref = np.array(vref, float)
    ph = steady_physics(vref, scale)
    net = DcNetwork.of(RACK)
    load = np.zeros(net.nseg)
    np.add.at(load, ph.dev_seg, np.minimum(ph.dev_p, ph.dev_cap))
    fl = flow(net, np.array([b.closed for b in RACK.branches]), vref, load)
    assert fl.converged
    assert np.allclose(fl.v, ph.v, atol=1e-6)
    assert np.allclose(fl.i_conv, [c.i_out for c in ph.conv.values()], atol=1e-4)


def test_realise_gives_setpoints_that_deliver_the_chosen_powers() -> None:
    net = DcNetwork.of(RACK)
    closed = np.array([b.closed for b in RACK.branches])
    load = np.array([300.0, 420.0, 250.0, 380.0])
    on = np.array([True, True, False, True])
    want = np.array([500.0, 400.0, 0.0, 453.0])  # sums to the load: the holder takes the loss
    vref, planned = realise(net, closed, on, want, load, 12.2)
    assert np.isnan(vref[2])
    back = flow(net, closed, vref, load)
    assert back.converged
    assert np.allclose(back.v, planned.v, atol=1e-7)
    assert np.allclose(back.p_conv, planned.p_conv, atol=1e-5)
    holder = int(np.argmax(want))
    others = [k for k in (0, 1, 3) if k != holder]
    assert np.allclose(back.p_conv[others], want[others], atol=1e-5)
    # energy balance: what the converters deliver is the load plus the mesh's loss
    assert back.p_conv.sum() == pytest.approx(load.sum() + back.loss_dist_w, rel=1e-9)


def test_an_island_without_a_converter_cannot_be_realised() -> None:
    net = DcNetwork.of(RACK)
    closed = np.array([True, False, True, False])  # {A, B} and {C, D}
    on = np.array([True, True, False, False])
    assert realise(net, closed, on, np.array([300.0, 300, 0, 0]),
                   np.array([200.0, 200, 100, 100]), 12.0) is None
